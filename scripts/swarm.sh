#!/usr/bin/env bash
# A local 3-node Docker Swarm for dev and tests: a manager and two workers, each a dockerd of its
# own in a network namespace of its own, on a private lan that only this machine's root namespace
# can reach, with a registry every node pulls from.
#
#   scripts/swarm.sh up                 start (or reuse, or repair) the cluster; writes .slipway/swarm.env
#   scripts/swarm.sh status             nodes, their dockerd, link and swarm state
#   scripts/swarm.sh stop-node NAME     stop NAME's dockerd (the swarm sees it Down)
#   scripts/swarm.sh start-node NAME    start it again (it rejoins as the same node)
#   scripts/swarm.sh cut-node NAME      take NAME's link down (a partition)
#   scripts/swarm.sh heal-node NAME     bring it back up
#   scripts/swarm.sh down               stop all of it and remove its namespaces, links and data
# NAME is manager, worker1 or worker2.
#
# Layout (ID = 8 hex digits of sha256($SLIPWAY_STATE_DIR), so clones never share a name):
#   netns slwsw-ID-lan       a bridge and nothing else: no address, no route. An nft bridge filter
#                            lets through only IPv4 between the nodes and the root side's address.
#   netns slwsw-ID-<node>    eth0 = <lan>.11/.12/.13, only the lan's connected route; dockerd runs
#                            here with --iptables=true, so its rules stay in this namespace, and
#                            so does the node's function firewall (below).
#   veth  slwswID            in the root namespace, <lan>.1: Slipway (API, workers, tests) reaches
#                            the nodes through it, and the nodes reach the root namespace at <lan>.1.
# The root namespace's iptables/nft rules and sysctls are never touched; the only things this script
# adds there are the veth (with its connected route) and, without SLIPWAY_REGISTRY, a registry
# process listening on <lan>.1.
#
# Every node runs scripts/lib/function-firewall.sh in its namespace, as the single engine does
# (bridges docker_gwbridge, uplink eth0), applied whenever up or start-node starts, reuses or
# repairs the node's dockerd; a node whose firewall cannot be applied fails the command. A task
# has two interfaces: its overlay (its function's own network, which the firewall leaves alone)
# and docker_gwbridge, its default route, which all tasks of all tenants on the node share. So:
#   - a published port (`--publish mode=host`) admits only the platform: <lan>.1 (the root
#     namespace) and the nodes' own addresses (Slipway's api when it runs on the cluster, on the
#     host network); anything else on the lan, and every task, is dropped;
#   - a task reaches nothing through docker_gwbridge: not another task on it (bridged traffic is
#     filtered: net.bridge.bridge-nf-call-iptables=1 in the node's namespace, where that setting
#     lives), not its node (gateway, eth0, published ports), not other nodes, not <lan>.1;
#   - SLIPWAY_FUNCTION_EGRESS / SLIPWAY_FUNCTION_EGRESS_ALLOW widen that as on the single engine
#     (the nodes have no default route, so `public` reaches nothing beyond the allowances; the
#     lan and the registry stay closed under both, whatever the allowances name).
#
# Knobs (all optional):
#   SLIPWAY_STATE_DIR            state root (default <repo>/.slipway); cluster state in swarm/
#   SLIPWAY_SWARM_SUBNET         the lan, an IPv4 /24 (default 10.A.B.0/24 from the hash)
#   SLIPWAY_SWARM_POOL           swarm's --default-addr-pool for overlays (default 10.C.0.0/16)
#   SLIPWAY_REGISTRY             IPv4:port of a registry listening on an address of this machine's
#                                root namespace (not loopback); default: start one on <lan>.1
#   SLIPWAY_SWARM_REGISTRY_PORT  port of the registry this script starts (5000)
#   SLIPWAY_SWARM_STORAGE_DRIVER the nodes' storage driver (overlay2)
#   SLIPWAY_SWARM_HEARTBEAT      the dispatcher heartbeat, e.g. 1s (Docker's 5s): a stopped or cut
#                                node is Down after about three of them
#   SLIPWAY_FUNCTION_EGRESS, SLIPWAY_FUNCTION_EGRESS_ALLOW
#                                the tasks' egress, passed to every node's function firewall
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/services.sh
source scripts/lib/services.sh

SWARM_NODES=(manager worker1 worker2)
SWARM_DIR=$SLIPWAY_STATE_DIR/swarm
SWARM_LOGS=$SLIPWAY_LOGS/swarm
SWARM_ENV=$SLIPWAY_STATE_DIR/swarm.env
SWARM_HASH=$(printf '%s' "$SLIPWAY_STATE_DIR" | sha256sum | cut -c1-12)
SWARM_ID=${SWARM_HASH:0:8}
# 13 characters: interface names hold 15.
SWARM_HOST_IF=slwsw$SWARM_ID
SWARM_NFT_TABLE=slipway_swarm
# 10.224.0.0/12 belongs to another Slipway component; the lan and the pool must stay out of it.
SWARM_RESERVED=10.224.0.0/12
SWARM_API=v1.41
# Set by swarm_wanted_params (from the environment) or swarm_load_params (from the cluster).
SWARM_LAN='' SWARM_NET='' SWARM_HOST_ADDR='' SWARM_POOL='' SWARM_REGISTRY='' SWARM_OWN_REGISTRY=''

swarm_usage() {
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

swarm_ns() { echo "slwsw-$SWARM_ID-$1"; } # lan | manager | worker1 | worker2
swarm_addr() { # node
  case $1 in
    manager) echo "$SWARM_NET.11" ;;
    worker1) echo "$SWARM_NET.12" ;;
    worker2) echo "$SWARM_NET.13" ;;
  esac
}
swarm_check_node() {
  case ${1:-} in
    manager | worker1 | worker2) ;;
    *) slipway_die "swarm: unknown node '${1:-}' (manager, worker1 or worker2)" ;;
  esac
}

# A node's files. The docker socket and the exec root (containerd's sockets live there) must fit
# in sun_path (107 bytes), so a deep state dir moves them to a short directory under /run.
swarm_node_paths() { # node -> node_dir node_sock node_exec
  node_dir=$SWARM_DIR/$1
  node_sock=$node_dir/docker.sock node_exec=$node_dir/exec
  if ((${#node_dir} > 60)); then
    node_sock=$(slipway_short_run_dir)/swarm-$1/docker.sock
    node_exec=$(slipway_short_run_dir)/swarm-$1/exec
  fi
}
swarm_node_host() { # node -> unix:///…/docker.sock
  local node_dir node_sock node_exec
  swarm_node_paths "$1"
  echo "unix://$node_sock"
}
swarm_docker() { # node args...
  local host
  host=$(swarm_node_host "$1")
  shift
  "$SLIPWAY_DOCKER_CLI" -H "$host" "$@"
}
swarm_answers() { swarm_docker "$1" version --format '{{.Server.Version}}' >/dev/null 2>&1; }
# The cgroup parent of a node's containers: also how leftovers of a killed node are found.
swarm_cgroup() { echo "slwsw-$SWARM_ID-$1"; }

# --- addresses ---------------------------------------------------------------------------------

swarm_ip2int() {
  local a b c d
  IFS=. read -r a b c d <<<"$1"
  echo $(((a << 24) | (b << 16) | (c << 8) | d))
}
swarm_overlaps() { # cidr cidr (a bare address is a /32)
  local a=${1%/*} al=32 b=${2%/*} bl=32 l mask
  if [[ $1 == */* ]]; then al=${1#*/}; fi
  if [[ $2 == */* ]]; then bl=${2#*/}; fi
  l=$((al < bl ? al : bl))
  mask=$(((0xffffffff << (32 - l)) & 0xffffffff))
  (((($(swarm_ip2int "$a") ^ $(swarm_ip2int "$b")) & mask) == 0))
}
swarm_is_ipv4() {
  local o
  [[ $1 =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || return 1
  for o in ${1//./ }; do ((10#$o <= 255)) || return 1; done
}

# The defaults come from the hash as well, so two clones' lans do not clash. The second octet
# is 16-222: clear of 10.224.0.0/12 and of 10.223.0.0/16, where the functions' runtime network
# (services.sh) takes its uplinks. The pool is a /16 that cannot contain the lan.
swarm_default_subnet() {
  local n=$((16#${SWARM_HASH:8:4}))
  echo "10.$((16 + (n >> 8) % 207)).$((n & 255)).0/24"
}
swarm_default_pool() {
  local second
  second=$(cut -d. -f2 <<<"$1")
  if ((second < 222)); then echo "10.$((second + 1)).0.0/16"; else echo "10.16.0.0/16"; fi
}

# Resolves the wanted parameters from the environment into SWARM_*.
swarm_wanted_params() {
  SWARM_LAN=${SLIPWAY_SWARM_SUBNET:-$(swarm_default_subnet)}
  if ! [[ $SWARM_LAN =~ ^[0-9.]+\.0/24$ ]] || ! swarm_is_ipv4 "${SWARM_LAN%/24}"; then
    slipway_die "swarm: SLIPWAY_SWARM_SUBNET=$SWARM_LAN: expected an IPv4 /24 such as 10.20.30.0/24"
  fi
  SWARM_NET=${SWARM_LAN%.0/24}
  SWARM_HOST_ADDR=$SWARM_NET.1
  SWARM_POOL=${SLIPWAY_SWARM_POOL:-$(swarm_default_pool "$SWARM_LAN")}
  local pool_len=${SWARM_POOL##*/}
  if ! [[ $SWARM_POOL =~ ^[0-9.]+/[0-9]+$ ]] || ! swarm_is_ipv4 "${SWARM_POOL%/*}" \
    || ((10#$pool_len < 8 || 10#$pool_len > 24)); then
    slipway_die "swarm: SLIPWAY_SWARM_POOL=$SWARM_POOL: expected an IPv4 prefix between /8 and /24"
  fi
  local what
  for what in "$SWARM_LAN" "$SWARM_POOL"; do
    if swarm_overlaps "$what" "$SWARM_RESERVED"; then
      slipway_die "swarm: $what overlaps $SWARM_RESERVED, which another Slipway component uses"
    fi
  done
  if swarm_overlaps "$SWARM_LAN" "$SWARM_POOL"; then
    slipway_die "swarm: the overlay pool $SWARM_POOL overlaps the lan $SWARM_LAN"
  fi

  local reg=${SLIPWAY_REGISTRY:-} host
  if [ -z "$reg" ]; then
    SWARM_OWN_REGISTRY=1
    SWARM_REGISTRY=$SWARM_HOST_ADDR:${SLIPWAY_SWARM_REGISTRY_PORT:-5000}
    return 0
  fi
  SWARM_OWN_REGISTRY=0
  SWARM_REGISTRY=$reg
  host=${reg%:*}
  if ! [[ $reg =~ ^[0-9.]+:[0-9]+$ ]] || ! swarm_is_ipv4 "$host"; then
    slipway_die "swarm: SLIPWAY_REGISTRY=$reg: expected IPv4:port (the nodes cannot resolve names)"
  fi
  # The nodes reach it through the root namespace, which must answer itself: an address it
  # would forward elsewhere would let the nodes' traffic leave the machine.
  if swarm_overlaps "$host" 127.0.0.0/8; then
    slipway_die "swarm: SLIPWAY_REGISTRY=$reg is loopback, which the nodes cannot reach; unset it (a registry on $SWARM_HOST_ADDR is started) or listen on a non-loopback address"
  fi
  if [ "$host" != "$SWARM_HOST_ADDR" ] && ! ip -4 route get "$host" 2>/dev/null | grep -q '^local '; then
    slipway_die "swarm: SLIPWAY_REGISTRY=$reg is not an address of this machine's root namespace; the nodes may only reach this machine"
  fi
  if swarm_overlaps "$host" "$SWARM_POOL"; then
    slipway_die "swarm: SLIPWAY_REGISTRY=$reg lies in the overlay pool $SWARM_POOL (set SLIPWAY_SWARM_POOL)"
  fi
}

# The parameters a cluster was created with, kept until `down` (the nodes' swarm state has the
# addresses baked in, so a cluster cannot change them while it exists).
swarm_save_params() {
  {
    echo "# Written by scripts/swarm.sh; removed by scripts/swarm.sh down."
    printf 'SWARM_LAN=%q\nSWARM_POOL=%q\nSWARM_REGISTRY=%q\nSWARM_OWN_REGISTRY=%q\n' \
      "$SWARM_LAN" "$SWARM_POOL" "$SWARM_REGISTRY" "$SWARM_OWN_REGISTRY"
  } >"$SWARM_DIR/cluster.env.tmp"
  mv "$SWARM_DIR/cluster.env.tmp" "$SWARM_DIR/cluster.env"
}
swarm_load_params() { # returns 1 when no cluster was created
  [ -f "$SWARM_DIR/cluster.env" ] || return 1
  # shellcheck source=/dev/null
  source "$SWARM_DIR/cluster.env"
  SWARM_NET=${SWARM_LAN%.0/24}
  SWARM_HOST_ADDR=$SWARM_NET.1
}
swarm_need_cluster() {
  swarm_load_params || slipway_die "swarm: no cluster under $SWARM_DIR (run scripts/swarm.sh up)"
}

# --- the lan -----------------------------------------------------------------------------------

swarm_ns_exists() { [ -e "/run/netns/$1" ]; }

# `ip netns add` makes /run/netns (and a shared bind mount of it) on first use; remember whether
# we did, so that `down` can leave the machine as it found it.
swarm_note_run_netns() {
  [ -f "$SWARM_DIR/run-netns.state" ] && return 0
  if [ ! -d /run/netns ]; then
    echo created >"$SWARM_DIR/run-netns.state"
  elif ! mountpoint -q /run/netns; then
    echo mounted >"$SWARM_DIR/run-netns.state"
  else
    echo found >"$SWARM_DIR/run-netns.state"
  fi
}

swarm_ns_add() { # ns
  swarm_ns_exists "$1" && return 0
  swarm_note_run_netns
  ip netns add "$1"
  ip -n "$1" link set lo up
}

# Fails if the lan would shadow or duplicate a route or address the root namespace already has.
swarm_check_lan_free() {
  local first second _ dst
  while read -r first second _; do
    dst=$first
    case $first in
      local | broadcast | unicast | multicast | anycast | unreachable | prohibit | blackhole | throw | nat) dst=$second ;;
    esac
    [ "$dst" = default ] && continue
    if swarm_overlaps "$dst" "$SWARM_LAN"; then
      slipway_die "swarm: the root namespace already routes $dst, which overlaps the lan $SWARM_LAN; set SLIPWAY_SWARM_SUBNET to a free /24"
    fi
  done < <(ip -4 -o route show table all)
}

# The bridge filter: IPv4 between the lan's own hosts, and to the registry if the caller's
# listens on another root-namespace address; ARP so they find each other. Nothing else (no IPv6,
# no other destination) crosses the lan, whatever a node or a container in it sends. Loaded
# atomically, so re-running up never leaves the lan unfiltered.
swarm_nft_rules() {
  local hosts=$SWARM_HOST_ADDR node nodes='' reg_host=${SWARM_REGISTRY%:*} reg_port=${SWARM_REGISTRY##*:}
  for node in "${SWARM_NODES[@]}"; do nodes+=${nodes:+, }$(swarm_addr "$node"); done
  hosts+=", $nodes"
  cat <<NFT
table bridge $SWARM_NFT_TABLE
delete table bridge $SWARM_NFT_TABLE
table bridge $SWARM_NFT_TABLE {
  chain forward {
    type filter hook forward priority 0; policy drop;
    ether type arp accept
    ip saddr { $hosts } ip daddr { $hosts } accept
NFT
  if [ "$reg_host" != "$SWARM_HOST_ADDR" ]; then
    echo "    ip saddr { $nodes } ip daddr $reg_host tcp dport $reg_port accept"
    echo "    ip saddr $reg_host tcp sport $reg_port ip daddr { $nodes } accept"
  fi
  echo "  }"
  echo "}"
}

# Creates whatever part of the lan is missing; never recreates (a running node keeps its link).
# Links it creates are up; a link that exists keeps its state (cut-node's), up heals it.
swarm_net_up() {
  local lan node ns addr reg_host=${SWARM_REGISTRY%:*}
  lan=$(swarm_ns lan)
  # Before anything is made: a clash leaves nothing behind.
  if ! ip link show "$SWARM_HOST_IF" >/dev/null 2>&1; then swarm_check_lan_free; fi
  swarm_ns_add "$lan"
  # No address and no route in the lan namespace, so it cannot route; forwarding off anyway.
  ip netns exec "$lan" sysctl -q -w net.ipv4.ip_forward=0 net.ipv6.conf.all.disable_ipv6=1 \
    net.ipv6.conf.default.disable_ipv6=1 >/dev/null
  if ! ip -n "$lan" link show br0 >/dev/null 2>&1; then
    ip -n "$lan" link add br0 type bridge
  fi
  ip -n "$lan" link set br0 up
  ip netns exec "$lan" nft -f - < <(swarm_nft_rules) \
    || slipway_die "swarm: could not load the lan's nft filter"

  if ! ip link show "$SWARM_HOST_IF" >/dev/null 2>&1; then
    ip link add "$SWARM_HOST_IF" type veth peer name to-host netns "$lan"
  fi
  # No IPv6 link-local address or route appears in the root namespace.
  sysctl -q -w "net.ipv6.conf.$SWARM_HOST_IF.disable_ipv6=1" >/dev/null 2>&1 || true
  ip -n "$lan" link set to-host master br0 up
  if ! ip -4 -o addr show dev "$SWARM_HOST_IF" | grep -qF " $SWARM_HOST_ADDR/24 "; then
    ip addr add "$SWARM_HOST_ADDR/24" dev "$SWARM_HOST_IF"
  fi
  ip link set "$SWARM_HOST_IF" up

  for node in "${SWARM_NODES[@]}"; do
    ns=$(swarm_ns "$node")
    addr=$(swarm_addr "$node")
    swarm_ns_add "$ns"
    if ! ip -n "$lan" link show "to-$node" >/dev/null 2>&1; then
      # A half-made pair from an interrupted run: its node end would block the new one.
      ip -n "$ns" link del eth0 2>/dev/null || true
      ip -n "$lan" link add "to-$node" type veth peer name eth0 netns "$ns"
      ip -n "$lan" link set "to-$node" master br0 up
    fi
    if ! ip -n "$ns" -4 -o addr show dev eth0 | grep -qF " $addr/24 "; then
      ip -n "$ns" addr add "$addr/24" dev eth0
    fi
    ip -n "$ns" link set eth0 up
    # No default route: the lan is all a node knows. A caller's registry on another address of
    # the root namespace gets a host route through the root side (the filter allows only its port).
    if [ "$reg_host" != "$SWARM_HOST_ADDR" ]; then
      ip -n "$ns" route replace "$reg_host/32" via "$SWARM_HOST_ADDR" dev eth0
    fi
  done
}

swarm_link() { # node up|down
  ip -n "$(swarm_ns lan)" link set "to-$1" "$2"
}
swarm_link_state() { # node -> up | down | missing
  local flags
  flags=$(ip -n "$(swarm_ns lan)" -o link show "to-$1" 2>/dev/null) || {
    echo missing
    return 0
  }
  if [[ $flags == *"<"*UP*">"* ]] && [[ $flags != *NO-CARRIER* ]]; then echo up; else echo down; fi
}

# --- the registry ------------------------------------------------------------------------------

# The caller's registry may ask for the login services.sh made (SLIPWAY_REGISTRY_USERNAME).
swarm_registry_curl() {
  local login=()
  if [ -n "${SLIPWAY_REGISTRY_USERNAME:-}" ]; then
    login=(-u "$SLIPWAY_REGISTRY_USERNAME:$SLIPWAY_REGISTRY_PASSWORD")
  fi
  curl "${login[@]}" "$@"
}
swarm_registry_ok() { swarm_registry_curl -fsS -m 5 --noproxy '*' -o /dev/null "http://$SWARM_REGISTRY/v2/"; }

# The pid of the registry this script started, if it still runs.
swarm_registry_pid() {
  local pid='' dir=$SWARM_DIR/registry
  [ -f "$dir/pid" ] && pid=$(cat "$dir/pid")
  if slipway_alive "$pid" docker-registry && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$dir/config.yml"; then
    echo "$pid"
  fi
}

# Debian's docker-registry on the root side of the lan (config as services.sh's, own storage).
swarm_start_registry() {
  local dir=$SWARM_DIR/registry log=$SWARM_LOGS/registry.log t0 how=reused pid
  t0=$(slipway_now_ms)
  if [ "$SWARM_OWN_REGISTRY" != 1 ]; then
    swarm_registry_ok 2>/dev/null \
      || slipway_die "swarm: SLIPWAY_REGISTRY=$SWARM_REGISTRY does not answer /v2/ from the root namespace"
    slipway_note "swarm registry $SWARM_REGISTRY (the caller's)" reused "$t0"
    return 0
  fi
  if ! swarm_registry_ok 2>/dev/null; then
    how=started
    pid=$(swarm_registry_pid)
    if [ -n "$pid" ] && slipway_wait_for_owner "$pid" 30 "swarm registry" "$log" swarm_registry_ok; then
      how="reused (was starting)"
    else
      mkdir -p "$dir/data"
      cat >"$dir/config.yml" <<YAML
# Written by scripts/swarm.sh.
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: $SWARM_REGISTRY
  secret: slipway-local-swarm-registry-only
YAML
      slipway_say "swarm registry: starting on $SWARM_REGISTRY"
      slipway_spawn "swarm registry" "$log" docker-registry serve "$dir/config.yml"
      echo "$SLIPWAY_SPAWNED_PID" >"$dir/pid"
      slipway_wait_for "swarm registry" 30 "$log" "$SLIPWAY_SPAWNED_PID" swarm_registry_ok
    fi
  elif [ -z "$(swarm_registry_pid)" ]; then
    how="reused (not started by this script: something else listens on $SWARM_REGISTRY)"
  fi
  slipway_note "swarm registry $SWARM_REGISTRY" "$how" "$t0"
}

# --- the nodes' engines ------------------------------------------------------------------------

# Runs inside `nsenter --net=NODE unshare -m -u`: its own hostname (the swarm's node name), a
# sysfs of the node's network namespace (`ip netns exec` would remount /sys, and dockerd then
# finds no devices cgroup, so the cgroup tree is carried over onto the fresh sysfs), and its
# own /run/docker and /run/containerd (libnetwork's and the shims' sockets live there, whatever
# the exec root). All of it is private to the node's mount namespace and vanishes with it.
# shellcheck disable=SC2016  # expanded by the node's sh
SWARM_NODE_BOOT='
set -e
hostname "$1"
mount --rbind /sys/fs/cgroup "$2"
mount -t sysfs sysfs /sys
mount --rbind "$2" /sys/fs/cgroup
umount -R "$2"
mount -t tmpfs -o mode=0711 tmpfs /run/docker
mount -t tmpfs -o mode=0711 tmpfs /run/containerd
shift 2
exec "$@"
'

swarm_ns_inode() { stat -L -c %i "$1" 2>/dev/null; }

# The pid of a dockerd of NODE's (its command line names NODE's daemon.json), in whatever
# network namespace; pidfiles outlive their processes, and a pid may since be someone else's.
swarm_node_any_pid() { # node
  local node_dir node_sock node_exec pid f
  swarm_node_paths "$1"
  for f in "$node_dir/docker.pid" "$node_dir/launcher.pid"; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    if slipway_alive "$pid" dockerd && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF " $node_dir/daemon.json "; then
      echo "$pid"
      return 0
    fi
  done
}

# The pid of NODE's dockerd if it runs in NODE's current network namespace (one left in an older
# namespace of the same name is a stray).
swarm_node_pid() { # node
  local pid
  pid=$(swarm_node_any_pid "$1")
  [ -n "$pid" ] || return 0
  if [ "$(swarm_ns_inode "/proc/$pid/ns/net")" = "$(swarm_ns_inode "/run/netns/$(swarm_ns "$1")")" ]; then
    echo "$pid"
  fi
}

# Everything left of a node whose dockerd is gone: processes in its network namespace
# (containerd, shims) and in its containers' cgroups. Then its cgroups themselves.
swarm_reap_node() { # node
  local ns cg pids='' d t
  ns=$(swarm_ns "$1")
  cg=$(swarm_cgroup "$1")
  for t in 1 2 3 4 5; do
    pids=$(swarm_node_procs "$ns" "$cg" | sort -un | tr '\n' ' ')
    [ -n "${pids// /}" ] || break
    # shellcheck disable=SC2086  # a list of pids
    kill -KILL $pids 2>/dev/null || true
    sleep 0.2
  done
  for d in /sys/fs/cgroup/"$cg" /sys/fs/cgroup/*/"$cg"; do
    if [ -d "$d" ]; then find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true; fi
  done
}
swarm_node_procs() { # ns cgroup
  local d
  if swarm_ns_exists "$1"; then ip netns pids "$1" 2>/dev/null || true; fi
  for d in /sys/fs/cgroup/"$2" /sys/fs/cgroup/*/"$2"; do
    if [ -d "$d" ]; then find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null || true; fi
  done
}

# /run/docker and /run/containerd are the nodes' tmpfs mount points; on a machine without them,
# make them and remember to remove them again.
swarm_mount_points() {
  local d
  for d in /run/docker /run/containerd; do
    if [ ! -d "$d" ]; then
      mkdir -p "$d"
      echo "$d" >>"$SWARM_DIR/made-dirs"
    fi
  done
}

# The nodes' own addresses, comma-separated CIDRs: Slipway's api may run on any node (the stack
# of deploy/swarm/stack.yml, on the host network) and open connections to tasks on the others. A
# task never sends from a node's address into the lan: its traffic out of docker_gwbridge towards
# the lan is dropped whatever the egress settings (the lan is among SLIPWAY_HOST_ADDRESSES).
swarm_node_addrs() {
  local node out=()
  for node in "${SWARM_NODES[@]}"; do out+=("$(swarm_addr "$node")/32"); done
  (IFS=,; echo "${out[*]}")
}

# The node's function firewall (see the header), in the node's network namespace. Its rules live
# in the namespace and outlast the node's dockerd; re-applying replaces them atomically.
swarm_apply_firewall() { # node
  local node=$1 ns log=$SWARM_LOGS/$1-firewall.log reg_host=${SWARM_REGISTRY%:*}
  ns=$(swarm_ns "$node")
  SLIPWAY_FUNCTION_BRIDGES=docker_gwbridge SLIPWAY_UPLINK=eth0 \
    SLIPWAY_PLATFORM_SOURCES="$SWARM_HOST_ADDR/32,$(swarm_node_addrs)" \
    SLIPWAY_FUNCTION_EGRESS="${SLIPWAY_FUNCTION_EGRESS:-none}" \
    SLIPWAY_FUNCTION_EGRESS_ALLOW="${SLIPWAY_FUNCTION_EGRESS_ALLOW:-}" \
    SLIPWAY_HOST_ADDRESSES="$SWARM_LAN $reg_host/32" \
    ip netns exec "$ns" bash "$SLIPWAY_REPO/scripts/lib/function-firewall.sh" >>"$log" 2>&1 \
    || slipway_fail "swarm $node" "$log" "could not apply the function firewall in netns $ns"
}

swarm_start_node() { # node
  local node=$1 node_dir node_sock node_exec ns log t0 how=reused pid
  t0=$(slipway_now_ms)
  swarm_node_paths "$node"
  ns=$(swarm_ns "$node")
  log=$SWARM_LOGS/$node.log
  pid=$(swarm_node_pid "$node")
  if [ -n "$pid" ] && swarm_answers "$node"; then
    :
  else
    how=started
    if [ -n "$pid" ] && slipway_wait_for_owner "$pid" 60 "swarm $node dockerd" "$log" swarm_answers "$node"; then
      how="reused (was starting)"
    else
      # Whatever a dead or stray engine of this node left behind would hold its sockets.
      pid=$(swarm_node_any_pid "$node")
      if [ -n "$pid" ]; then
        slipway_say "swarm $node: its dockerd (pid $pid) runs in a stale network namespace; killing it"
        kill -KILL "$pid" 2>/dev/null || true
      fi
      swarm_reap_node "$node"
      swarm_mount_points
      mkdir -p "$node_dir/data" "$node_dir/cg" "$node_exec" "$(dirname "$node_sock")"
      rm -f "$node_sock" "$node_dir/docker.pid"
      # Its own key.json: nodes sharing /etc/docker/key.json would share one engine identity.
      printf '{"deprecated-key-path": "%s"}\n' "$node_dir/key.json" >"$node_dir/daemon.json"
      # Before dockerd as well: a node with swarm state rejoins and may get tasks at once.
      swarm_apply_firewall "$node"
      slipway_say "swarm $node: starting dockerd in netns $ns on $node_sock"
      slipway_spawn "swarm $node dockerd" "$log" \
        nsenter --net="/run/netns/$ns" -- unshare -m -u --propagation private -- \
        /bin/sh -c "$SWARM_NODE_BOOT" swarm-node "$node" "$node_dir/cg" \
        env -u HTTP_PROXY -u HTTPS_PROXY -u NO_PROXY -u http_proxy -u https_proxy -u no_proxy \
        -u ALL_PROXY -u all_proxy /usr/sbin/dockerd \
        --config-file "$node_dir/daemon.json" --data-root "$node_dir/data" --exec-root "$node_exec" \
        -H "unix://$node_sock" --pidfile "$node_dir/docker.pid" \
        --storage-driver "${SLIPWAY_SWARM_STORAGE_DRIVER:-overlay2}" \
        --cgroup-parent "/$(swarm_cgroup "$node")" --insecure-registry "$SWARM_REGISTRY" \
        --iptables=true --log-level info
      # nsenter, unshare and sh all exec: this is dockerd's own pid.
      echo "$SLIPWAY_SPAWNED_PID" >"$node_dir/launcher.pid"
      slipway_wait_for "swarm $node dockerd" 60 "$log" "$SLIPWAY_SPAWNED_PID" swarm_answers "$node"
    fi
  fi
  # Every time: a reused engine may have been started by an older script, and dockerd's own
  # start-up rearranges FORWARD.
  swarm_apply_firewall "$node"
  slipway_note "swarm $node dockerd" "$how" "$t0"
}

swarm_stop_node() { # node
  local node=$1 pid t
  pid=$(swarm_node_pid "$node")
  if [ -n "$pid" ]; then
    slipway_say "swarm $node: stopping dockerd (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    # It stops its containers and its containerd first.
    for ((t = 0; t < 150; t++)); do
      slipway_alive "$pid" || break
      sleep 0.2
    done
    if slipway_alive "$pid"; then
      slipway_say "swarm $node: dockerd (pid $pid) ignored SIGTERM for 30s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  swarm_reap_node "$node"
}

# --- the swarm ---------------------------------------------------------------------------------

swarm_state() { swarm_docker "$1" info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo unknown; }
# LocalNodeState once it settles: a restarted engine is 'pending' until it reaches its manager,
# and must not be mistaken for a broken one (re-initialising would throw the cluster away).
swarm_settled_state() { # node
  local t0 state
  t0=$(slipway_now_ms)
  while :; do
    state=$(swarm_state "$1")
    case $state in
      pending | unknown) ;;
      *) break ;;
    esac
    (($(slipway_now_ms) - t0 < 30000)) || break
    sleep 0.2
  done
  echo "$state"
}
swarm_node_id() { swarm_docker "$1" info --format '{{.Swarm.NodeID}}' 2>/dev/null || true; }

# "<state> <availability>" of NODE as the manager sees it (by the id it joined with).
swarm_seen() { # node
  local id=''
  [ -f "$SWARM_DIR/$1/node-id" ] && id=$(cat "$SWARM_DIR/$1/node-id")
  [ -n "$id" ] || {
    echo "unknown -"
    return 0
  }
  swarm_docker manager node inspect "$id" --format '{{.Status.State}} {{.Spec.Availability}}' 2>/dev/null \
    || echo "unknown -"
}
swarm_is_ready() { [ "$(swarm_seen "$1")" = "ready active" ]; }

# Waits until the manager sees NODE in state $2 (ready, down); prints the seconds it took.
swarm_wait_seen() { # node state deadline
  local t0 state
  t0=$(slipway_now_ms)
  while :; do
    state=$(swarm_seen "$1")
    [ "${state%% *}" = "$2" ] && break
    if (($(slipway_now_ms) - t0 > $3 * 1000)); then
      slipway_fail "swarm $1" "$SWARM_LOGS/$1.log" "the manager did not see it $2 within ${3}s (it says: $state)"
    fi
    sleep 0.2
  done
  slipway_say "swarm $1: $2 for the manager after $(slipway_since "$t0")s"
}

swarm_init_manager() {
  local state addr log=$SWARM_LOGS/manager.log
  addr=$(swarm_addr manager)
  state=$(swarm_settled_state manager)
  if [ "$state" = active ] && [ "$(swarm_docker manager info --format '{{.Swarm.ControlAvailable}} {{.Swarm.NodeAddr}}')" = "true $addr" ]; then
    :
  else
    if [ "$state" != inactive ]; then
      # An error, a pending join or a swarm of other addresses: a fresh one is the way out (the
      # workers notice their cluster is gone and rejoin below).
      slipway_say "swarm manager: its swarm state is '$state'; leaving it and creating a new swarm"
      swarm_docker manager swarm leave --force >>"$log" 2>&1 || true
    fi
    slipway_say "swarm manager: swarm init --advertise-addr $addr --default-addr-pool $SWARM_POOL"
    # stdout carries the join token: never into a log.
    swarm_docker manager swarm init --advertise-addr "$addr" --listen-addr "$addr:2377" \
      --data-path-addr "$addr" --default-addr-pool "$SWARM_POOL" \
      --default-addr-pool-mask-length 24 >/dev/null 2>>"$log" \
      || slipway_fail "swarm manager" "$log" "swarm init failed"
  fi
  # How soon a silent node is Down (about 3 heartbeats); a cluster setting, so applied on reuse too.
  if [ -n "${SLIPWAY_SWARM_HEARTBEAT:-}" ]; then
    swarm_docker manager swarm update --dispatcher-heartbeat "$SLIPWAY_SWARM_HEARTBEAT" >>"$log" 2>&1 \
      || slipway_fail "swarm manager" "$log" "swarm update --dispatcher-heartbeat $SLIPWAY_SWARM_HEARTBEAT failed"
  fi
  swarm_node_id manager >"$SWARM_DIR/manager/node-id"
}

# Joins a worker with the Engine API, so the token is neither in a command line (ps) nor in a log.
swarm_join_worker() { # node
  local node=$1 id state addr maddr token host resp log=$SWARM_LOGS/$1.log
  addr=$(swarm_addr "$node")
  maddr=$(swarm_addr manager)
  state=$(swarm_settled_state "$node")
  id=$(swarm_node_id "$node")
  if [ "$state" = active ] && [ -n "$id" ] \
    && swarm_docker manager node inspect "$id" >/dev/null 2>&1; then
    echo "$id" >"$SWARM_DIR/$node/node-id"
    return 0
  fi
  if [ "$state" != inactive ]; then
    slipway_say "swarm $node: its swarm state is '$state' in another or a lost cluster; leaving it"
    swarm_docker "$node" swarm leave --force >>"$log" 2>&1 || true
  fi
  token=$(swarm_docker manager swarm join-token -q worker 2>>"$log") \
    || slipway_fail "swarm $node" "$log" "could not read the worker join token from the manager"
  host=$(swarm_node_host "$node")
  slipway_say "swarm $node: joining the manager at $maddr:2377"
  resp=$(printf '{"ListenAddr":"%s:2377","AdvertiseAddr":"%s","DataPathAddr":"%s","RemoteAddrs":["%s:2377"],"JoinToken":"%s"}' \
    "$addr" "$addr" "$addr" "$maddr" "$token" \
    | curl -sS -m 60 --unix-socket "${host#unix://}" -H 'Content-Type: application/json' \
      --data-binary @- -w '\n%{http_code}' "http://localhost/$SWARM_API/swarm/join" 2>&1) || true
  if [ "${resp##*$'\n'}" != 200 ]; then
    resp=${resp//"$token"/<token>}
    printf '%s\n' "$resp" >>"$log"
    slipway_fail "swarm $node" "$log" "swarm join failed: ${resp%$'\n'*}"
  fi
  token=
  id=$(swarm_node_id "$node")
  echo "$id" >"$SWARM_DIR/$node/node-id"
  # A node that left (or lost its state) stays listed as Down under its old id: drop those.
  local old
  for old in $(swarm_docker manager node ls --filter "name=$node" --format '{{.ID}} {{.Hostname}} {{.Status}}' \
    | awk -v h="$node" -v id="$id" '$2 == h && $1 != id && $3 == "Down" { print $1 }'); do
    swarm_docker manager node rm --force "$old" >>"$log" 2>&1 || true
  done
}

swarm_form() {
  local t0 node
  t0=$(slipway_now_ms)
  swarm_init_manager
  for node in worker1 worker2; do swarm_join_worker "$node"; done
  for node in "${SWARM_NODES[@]}"; do
    swarm_is_ready "$node" || swarm_wait_seen "$node" ready 60
  done
  slipway_note "swarm (3 nodes ready)" formed "$t0"
}

# The offline base image, made in the manager as services.sh makes it for the dev engine and
# pushed to the registry the nodes pull from (in a subshell: its variables stay there).
swarm_base_image() {
  (
    SLIPWAY_DOCKER_HOST=$(swarm_node_host manager)
    SLIPWAY_REGISTRY=$SWARM_REGISTRY
    SLIPWAY_LOGS=$SWARM_LOGS
    slipway_make_base_image
  ) || exit 1
}
swarm_base_digest() {
  swarm_registry_curl -fsSI -m 5 --noproxy '*' \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$SWARM_REGISTRY/v2/slipway/busybox/manifests/1" \
    | tr -d '\r' | awk -F': ' 'tolower($1) == "docker-content-digest" { print $2 }'
}

swarm_env_line() { # key value
  if [[ $2 == *"'"* ]]; then printf '%s=%q\n' "$1" "$2"; else printf "%s='%s'\n" "$1" "$2"; fi
}
swarm_write_env() {
  local node nodes='' upper
  for node in "${SWARM_NODES[@]}"; do nodes+=${nodes:+ }$node=$(swarm_node_host "$node"); done
  {
    echo "# Written by scripts/swarm.sh up on $(date -u +%FT%TZ); removed by scripts/swarm.sh down."
    swarm_env_line SLIPWAY_SWARM_MANAGER "$(swarm_node_host manager)"
    swarm_env_line SLIPWAY_SWARM_NODES "$nodes"
    swarm_env_line SLIPWAY_SWARM_REGISTRY "$SWARM_REGISTRY"
    swarm_env_line SLIPWAY_SWARM_BASE_IMAGE "$SWARM_REGISTRY/$SLIPWAY_BASE_IMAGE"
    swarm_env_line SLIPWAY_SWARM_BASE_IMAGE_DIGEST "$(swarm_base_digest)"
    swarm_env_line SLIPWAY_SWARM_LAN "$SWARM_LAN"
    swarm_env_line SLIPWAY_SWARM_HOST_ADDR "$SWARM_HOST_ADDR"
    swarm_env_line SLIPWAY_SWARM_HOST_IF "$SWARM_HOST_IF"
    swarm_env_line SLIPWAY_SWARM_POOL "$SWARM_POOL"
    swarm_env_line SLIPWAY_SWARM_NETNS_LAN "$(swarm_ns lan)"
    for node in "${SWARM_NODES[@]}"; do
      upper=$(tr '[:lower:]' '[:upper:]' <<<"$node")
      swarm_env_line "SLIPWAY_SWARM_NETNS_$upper" "$(swarm_ns "$node")"
      swarm_env_line "SLIPWAY_SWARM_ADDR_$upper" "$(swarm_addr "$node")"
    done
  } >"$SWARM_ENV.tmp"
  mv "$SWARM_ENV.tmp" "$SWARM_ENV"
  slipway_say "swarm: variables written to $SWARM_ENV"
}

# --- commands ----------------------------------------------------------------------------------

swarm_lock() {
  mkdir -p "$SWARM_DIR" "$SWARM_LOGS"
  exec {SLIPWAY_LOCK_FD}>"$SWARM_DIR/lock"
  flock -w 600 "$SLIPWAY_LOCK_FD" || slipway_die "swarm: another scripts/swarm.sh held $SWARM_DIR/lock for 10 minutes"
}

swarm_packages() {
  local missing=()
  command -v ip >/dev/null 2>&1 || missing+=(iproute2)
  command -v nft >/dev/null 2>&1 || missing+=(nftables)
  command -v nsenter >/dev/null 2>&1 && command -v unshare >/dev/null 2>&1 \
    && command -v flock >/dev/null 2>&1 || missing+=(util-linux)
  command -v curl >/dev/null 2>&1 || missing+=(curl ca-certificates)
  [ -x /usr/sbin/dockerd ] && [ -x "$SLIPWAY_DOCKER_CLI" ] || missing+=(docker.io)
  command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
  [ -n "$(slipway_busybox_path)" ] || missing+=(busybox-static)
  if ((${#missing[@]})); then slipway_apt_install "${missing[@]}"; fi
}

swarm_cmd_up() {
  local t0 node
  t0=$(slipway_now_ms)
  slipway_need_root "scripts/swarm.sh up"
  swarm_lock
  swarm_packages
  swarm_wanted_params
  local want="lan $SWARM_LAN, pool $SWARM_POOL, registry $SWARM_REGISTRY" have
  # In a subshell: the saved parameters must not overwrite the wanted ones.
  have=$(swarm_load_params && echo "lan $SWARM_LAN, pool $SWARM_POOL, registry $SWARM_REGISTRY") || true
  if [ -n "$have" ] && [ "$have" != "$want" ]; then
    slipway_die "swarm: the cluster under $SWARM_DIR was made with $have; now asked for $want. Run scripts/swarm.sh down first."
  fi
  swarm_save_params
  swarm_net_up
  for node in "${SWARM_NODES[@]}"; do swarm_link "$node" up; done
  slipway_say "swarm lan: $SWARM_LAN on $SWARM_HOST_IF ($SWARM_HOST_ADDR), netns $(swarm_ns lan)"
  swarm_start_registry
  for node in "${SWARM_NODES[@]}"; do swarm_start_node "$node"; done
  swarm_form
  swarm_base_image
  swarm_write_env
  slipway_unlock
  slipway_say "swarm: up in $(slipway_since "$t0")s; this run: $(printf '%s; ' "${SLIPWAY_COMPONENTS[@]}")"
  slipway_say "swarm: use it with: set -a; . $SWARM_ENV; set +a; docker -H \"\$SLIPWAY_SWARM_MANAGER\" node ls"
}

swarm_cmd_stop_node() { # node
  local t0
  swarm_check_node "${1:-}"
  slipway_need_root "scripts/swarm.sh stop-node"
  swarm_need_cluster
  swarm_lock
  t0=$(slipway_now_ms)
  swarm_stop_node "$1"
  slipway_say "swarm $1: dockerd stopped in $(slipway_since "$t0")s"
  if [ "$1" != manager ] && swarm_answers manager; then swarm_wait_seen "$1" down 60; fi
}

swarm_cmd_start_node() { # node
  local t0
  swarm_check_node "${1:-}"
  slipway_need_root "scripts/swarm.sh start-node"
  swarm_need_cluster
  swarm_lock
  t0=$(slipway_now_ms)
  swarm_net_up
  swarm_start_node "$1"
  if [ "$1" = manager ]; then
    # A single manager restores its raft state and leads again; wait until it serves.
    slipway_wait_for "swarm manager" 60 "$SWARM_LOGS/manager.log" "" swarm_is_ready manager
    # Its workers read Unknown until they reconnect; the cluster is back when they are Ready.
    local node
    for node in worker1 worker2; do
      if [ -n "$(swarm_node_pid "$node")" ] && [ "$(swarm_link_state "$node")" = up ]; then
        swarm_is_ready "$node" || swarm_wait_seen "$node" ready 60
      fi
    done
  else
    swarm_answers manager && swarm_wait_seen "$1" ready 60
  fi
  slipway_say "swarm $1: back in $(slipway_since "$t0")s"
}

swarm_cmd_link() { # node up|down
  swarm_check_node "${1:-}"
  slipway_need_root "scripts/swarm.sh cut-node/heal-node"
  swarm_need_cluster
  swarm_link "$1" "$2"
  slipway_say "swarm $1: link $(swarm_link_state "$1") (to-$1 in netns $(swarm_ns lan))"
}

swarm_cmd_status() {
  local node pid link seen
  if ! swarm_load_params; then
    slipway_say "swarm: no cluster under $SWARM_DIR"
    return 0
  fi
  printf '%-8s %-24s %-13s %-16s %-8s %s\n' NODE NETNS ADDRESS DOCKERD LINK SWARM
  for node in "${SWARM_NODES[@]}"; do
    pid=$(swarm_node_pid "$node")
    link=$(swarm_link_state "$node")
    seen=unknown
    if swarm_answers manager; then
      seen=$(swarm_seen "$node")
      [ "$node" != manager ] || seen+=" $(swarm_docker manager node ls --filter role=manager --format '{{.ManagerStatus}}' | head -n1)"
    else
      seen="(manager down)"
    fi
    if [ -n "$pid" ]; then pid="running $pid"; else pid=stopped; fi
    printf '%-8s %-24s %-13s %-16s %-8s %s\n' "$node" "$(swarm_ns "$node")" "$(swarm_addr "$node")" \
      "$pid" "$link" "$seen"
  done
  pid=$(swarm_registry_pid)
  if [ "$SWARM_OWN_REGISTRY" = 1 ]; then
    if [ -n "$pid" ]; then pid="pid $pid"; else pid="not running"; fi
    printf 'registry %s (%s)\n' "$SWARM_REGISTRY" "$pid"
  else
    printf "registry %s (the caller's)\n" "$SWARM_REGISTRY"
  fi
  printf 'lan      %s via %s (%s)\n' "$SWARM_LAN" "$SWARM_HOST_IF" "$SWARM_HOST_ADDR"
}

swarm_cmd_down() {
  local t0 i node pid d state
  t0=$(slipway_now_ms)
  slipway_need_root "scripts/swarm.sh down"
  swarm_lock
  # Each dockerd takes about 2 s to stop its containers: signal all of them, then wait for each.
  for node in "${SWARM_NODES[@]}"; do
    pid=$(swarm_node_pid "$node")
    if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; fi
  done
  for ((i = ${#SWARM_NODES[@]} - 1; i >= 0; i--)); do swarm_stop_node "${SWARM_NODES[i]}"; done
  pid=$(swarm_registry_pid)
  if [ -n "$pid" ]; then
    slipway_say "swarm registry: stopping (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do slipway_alive "$pid" || break; sleep 0.2; done
    slipway_alive "$pid" && kill -KILL "$pid" 2>/dev/null
  fi
  # Deleting the root end deletes its peer, the address and the connected route with it.
  if ip link show "$SWARM_HOST_IF" >/dev/null 2>&1; then ip link del "$SWARM_HOST_IF"; fi
  for node in "${SWARM_NODES[@]}" lan; do
    if swarm_ns_exists "$(swarm_ns "$node")"; then ip netns del "$(swarm_ns "$node")"; fi
  done
  # /run/netns as we found it: unmounted (and gone) if we made it and no one else uses it now.
  state=$(cat "$SWARM_DIR/run-netns.state" 2>/dev/null || true)
  if [ "$state" = created ] || [ "$state" = mounted ]; then
    if [ -d /run/netns ] && [ -z "$(ls -A /run/netns)" ]; then
      if mountpoint -q /run/netns; then umount /run/netns 2>/dev/null || true; fi
      if [ "$state" = created ]; then rmdir /run/netns 2>/dev/null || true; fi
    fi
  fi
  if [ -f "$SWARM_DIR/made-dirs" ]; then
    while read -r d; do rmdir "$d" 2>/dev/null || true; done <"$SWARM_DIR/made-dirs"
  fi
  for node in "${SWARM_NODES[@]}"; do
    d=$(slipway_short_run_dir)/swarm-$node
    if [ -d "$d" ]; then
      slipway_unmount_under "$d"
      rm -rf "$d"
    fi
  done
  rmdir "$(slipway_short_run_dir)" 2>/dev/null || true
  # Nothing of the nodes is mounted in this mount namespace; this is for safety before rm.
  slipway_unmount_under "$SWARM_DIR"
  for node in "${SWARM_NODES[@]}"; do rm -rf "${SWARM_DIR:?}/$node"; done
  rm -rf "$SWARM_DIR/registry"
  rm -f "$SWARM_DIR/cluster.env" "$SWARM_DIR/run-netns.state" "$SWARM_DIR/made-dirs" "$SWARM_ENV"
  slipway_unlock
  slipway_say "swarm: down in $(slipway_since "$t0")s"
}

case ${1:-} in
  up) swarm_cmd_up ;;
  down) swarm_cmd_down ;;
  status) swarm_cmd_status ;;
  stop-node) swarm_cmd_stop_node "${2:-}" ;;
  start-node) swarm_cmd_start_node "${2:-}" ;;
  cut-node) swarm_cmd_link "${2:-}" down ;;
  heal-node) swarm_cmd_link "${2:-}" up ;;
  *) swarm_usage ;;
esac
