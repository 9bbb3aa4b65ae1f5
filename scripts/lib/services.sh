# shellcheck shell=bash
# Installs and starts the real components Slipway runs on. Sourced by scripts/dev.sh and
# scripts/test.sh; safe under `set -euo pipefail`.
#
# Every function is idempotent: a service that already answers is reused, never restarted, and
# only what this invocation started is stopped by slipway_stop_started. All state lives under
# $SLIPWAY_STATE_DIR (default <repo>/.slipway), logs under $SLIPWAY_STATE_DIR/logs/.
# Any component that cannot be installed or started is a hard failure (there is no skip path,
# with or without CI=true).
#
# Knobs (all optional):
#   SLIPWAY_STATE_DIR      state root (default <repo>/.slipway)
#   SLIPWAY_PG_PORT        Postgres port on 127.0.0.1 (5433)
#   SLIPWAY_PG_FSYNC       fsync for the private cluster when *this* script starts it (on)
#   SLIPWAY_REGISTRY_PORT  registry port on 127.0.0.1 (5000)
#   SLIPWAY_S3_PORT        moto (S3) port on 127.0.0.1 (5002)
#   SLIPWAY_MOTO_VENV      moto's virtualenv (/var/cache/slipway/moto-venv)

SLIPWAY_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
: "${SLIPWAY_STATE_DIR:=$SLIPWAY_REPO/.slipway}"
mkdir -p "$SLIPWAY_STATE_DIR/logs"
SLIPWAY_STATE_DIR=$(cd "$SLIPWAY_STATE_DIR" && pwd)
export SLIPWAY_STATE_DIR
SLIPWAY_LOGS=$SLIPWAY_STATE_DIR/logs
export SLIPWAY_DOCKER_CONFIG=$SLIPWAY_STATE_DIR/docker-client
SLIPWAY_PG_BIN=/usr/lib/postgresql/15/bin
# The engine's own CLI from docker.io (/usr/local/bin/docker may be another client).
SLIPWAY_DOCKER_CLI=/usr/bin/docker
SLIPWAY_MOTO_VENV=${SLIPWAY_MOTO_VENV:-/var/cache/slipway/moto-venv}
SLIPWAY_BASE_IMAGE=slipway/busybox:1
# What this invocation started, in order: "pid:<pid>:<name>" or "pg:<data dir>".
SLIPWAY_STARTED=()
# One line per component for the summary: "<name> <started|reused> <seconds>s".
SLIPWAY_COMPONENTS=()
SLIPWAY_APT_UPDATED=0
# The data and exec roots of the dockerd this invocation started: dockerd leaves mounts there
# (the data root bind-mounted on itself, exec/netns/default) that block `rm -rf .slipway`.
SLIPWAY_DOCKERD_DIRS=()
SLIPWAY_LOCK_FD=

slipway_say() { printf '[slipway] %s\n' "$*" >&2; }
slipway_die() {
  printf '[slipway] ERROR: %s\n' "$*" >&2
  exit 1
}

# Milliseconds since the epoch, and a duration since $1 formatted as seconds.
slipway_now_ms() { echo $(($(date +%s%N) / 1000000)); }
slipway_since() {
  local ms=$(($(slipway_now_ms) - $1))
  printf '%d.%02d' $((ms / 1000)) $((ms % 1000 / 10))
}

slipway_note() { # name started|reused t0
  local took
  took=$(slipway_since "$3")
  SLIPWAY_COMPONENTS+=("$1 $2 ${took}s")
  slipway_say "$1: $2 in ${took}s"
}

# Shows the tail of a log, then fails naming the component and the log.
slipway_fail() { # component log message
  if [ -s "$2" ]; then
    printf '[slipway] --- last lines of %s ---\n' "$2" >&2
    tail -n 25 "$2" >&2 || true
    printf '[slipway] ---\n' >&2
  fi
  slipway_die "$1: $3 (log: $2)"
}

# True if process $1 exists, is not a zombie and (if $2 is given) is named $2.
slipway_alive() { # pid [comm]
  local stat
  [ -n "$1" ] || return 1
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  if [ -n "${2:-}" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" != "$2" ]; then return 1; fi
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

# Waits up to $2 seconds for "$@" to succeed while process $1 lives. Returns 0 when it
# answers, 1 when the process is gone (the caller then starts its own), fails on timeout.
slipway_wait_for_owner() { # pid deadline component log cmd...
  local pid=$1 deadline=$2 what=$3 log=$4 t0
  shift 4
  t0=$(slipway_now_ms)
  slipway_say "$what: pid $pid is already running for this state dir; waiting for it"
  until "$@" >/dev/null 2>&1; do
    slipway_alive "$pid" || return 1
    if (($(slipway_now_ms) - t0 > deadline * 1000)); then
      slipway_fail "$what" "$log" "pid $pid runs but did not answer within ${deadline}s"
    fi
    sleep 0.2
  done
}

# Polls "$@" every 0.2 s until it succeeds; fails after $deadline seconds. If $pid is not
# empty and that process dies first, fails at once.
slipway_wait_for() { # component deadline log pid cmd...
  local what=$1 deadline=$2 log=$3 pid=$4
  shift 4
  local t0
  t0=$(slipway_now_ms)
  until "$@" >/dev/null 2>&1; do
    if [ -n "$pid" ] && ! slipway_alive "$pid"; then
      slipway_fail "$what" "$log" "exited before it answered"
    fi
    if (($(slipway_now_ms) - t0 > deadline * 1000)); then
      slipway_fail "$what" "$log" "did not answer within ${deadline}s"
    fi
    sleep 0.2
  done
}

slipway_need_root() {
  [ "$(id -u)" = 0 ] || slipway_die "$1 needs root (run as root, or start it yourself and re-run)"
}

# Serialises service start-up across every clone on this machine (the ports are global):
# two scripts starting at once must not race for the same port.
slipway_lock() {
  local lock=/run/lock/slipway-services.lock
  [ -d /run/lock ] && [ -w /run/lock ] || lock=$SLIPWAY_STATE_DIR/services.lock
  exec {SLIPWAY_LOCK_FD}>"$lock"
  if ! flock -w 600 "$SLIPWAY_LOCK_FD"; then
    slipway_die "another Slipway script held $lock for 10 minutes"
  fi
}
slipway_unlock() {
  if [ -n "$SLIPWAY_LOCK_FD" ]; then
    exec {SLIPWAY_LOCK_FD}>&-
    SLIPWAY_LOCK_FD=
  fi
}

# Starts "$@" as a daemon in its own session (so a Ctrl-C in the terminal does not reach it),
# stdin from /dev/null, output appended to $log, without the lock's file descriptor.
# Sets SLIPWAY_SPAWNED_PID and records the process as started by this invocation.
slipway_spawn() { # name log cmd...
  local name=$1 log=$2
  shift 2
  if [ -n "$SLIPWAY_LOCK_FD" ]; then
    setsid "$@" </dev/null >>"$log" 2>&1 {SLIPWAY_LOCK_FD}>&- &
  else
    setsid "$@" </dev/null >>"$log" 2>&1 &
  fi
  SLIPWAY_SPAWNED_PID=$!
  SLIPWAY_STARTED+=("pid:$SLIPWAY_SPAWNED_PID:$name")
}

# A short directory under /run for unix sockets whose natural path would be too long
# (sun_path holds 107 bytes).
slipway_short_run_dir() {
  local hash
  hash=$(printf '%s' "$SLIPWAY_STATE_DIR" | sha256sum | cut -c1-12)
  echo "/run/slipway-$hash"
}

slipway_apt_install() { # packages...
  slipway_need_root "installing $*"
  export DEBIAN_FRONTEND=noninteractive
  local log=$SLIPWAY_LOGS/apt.log
  if [ "$SLIPWAY_APT_UPDATED" = 0 ]; then
    slipway_say "apt-get update"
    apt-get update >>"$log" 2>&1 || slipway_fail apt "$log" "apt-get update failed"
    SLIPWAY_APT_UPDATED=1
  fi
  slipway_say "apt-get install -y $*"
  apt-get install -y "$@" >>"$log" 2>&1 \
    || slipway_fail apt "$log" "apt-get install -y $* failed"
}

# The statically linked busybox from Debian's busybox-static (the dynamic `busybox` package
# ships the same path, so check the package, not the file).
slipway_busybox_path() {
  dpkg-query -L busybox-static 2>/dev/null | grep -E '/bin/busybox$' | head -n1
}

# Installs the Debian packages whose programs are missing.
slipway_ensure_packages() {
  local t0 missing=()
  t0=$(slipway_now_ms)
  [ -x "$SLIPWAY_PG_BIN/postgres" ] && [ -x "$SLIPWAY_PG_BIN/initdb" ] || missing+=(postgresql)
  [ -x /usr/sbin/dockerd ] && [ -x "$SLIPWAY_DOCKER_CLI" ] || missing+=(docker.io)
  command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
  [ -n "$(slipway_busybox_path)" ] || missing+=(busybox-static)
  command -v curl >/dev/null 2>&1 || missing+=(curl ca-certificates)
  # bcrypt for the registry's htpasswd file.
  command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
  # The worker fetches pushed commits with git (ssh remotes through ssh); the tests serve
  # repositories with git's own http-backend, and over ssh.
  command -v git >/dev/null 2>&1 && [ -x "$(git --exec-path)/git-http-backend" ] \
    || missing+=(git)
  command -v ssh >/dev/null 2>&1 && command -v ssh-keygen >/dev/null 2>&1 \
    || missing+=(openssh-client)
  # The tests start their own sshd on loopback to serve a repository over ssh; Debian's
  # policy-rc.d (or its absence of an init) keeps the package's own service from starting.
  [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
  # prlimit bounds what a git fetch may write.
  command -v flock >/dev/null 2>&1 && command -v setsid >/dev/null 2>&1 \
    && command -v runuser >/dev/null 2>&1 && command -v prlimit >/dev/null 2>&1 \
    || missing+=(util-linux)
  # The event stream's test publishes to, and consumes from, a real RabbitMQ.
  [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing+=(rabbitmq-server)
  # The console's test drives Debian's headless chromium through chromedriver.
  command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 \
    || missing+=(chromium chromium-driver)
  if ((${#missing[@]})); then
    slipway_apt_install "${missing[@]}"
    slipway_note packages installed "$t0"
  else
    slipway_say "packages: all present"
  fi
}

slipway_pg_ctl_start() { # data log fsync
  if [ -n "$SLIPWAY_LOCK_FD" ]; then
    runuser -u postgres -- "$SLIPWAY_PG_BIN/pg_ctl" -D "$1" -l "$2" -w -t 60 \
      -o "-c fsync=$3" start >>"$SLIPWAY_LOGS/pg_ctl.log" 2>&1 {SLIPWAY_LOCK_FD}>&-
  else
    runuser -u postgres -- "$SLIPWAY_PG_BIN/pg_ctl" -D "$1" -l "$2" -w -t 60 \
      -o "-c fsync=$3" start >>"$SLIPWAY_LOGS/pg_ctl.log" 2>&1
  fi
}

slipway_psql() { # user db args...
  local user=$1 db=$2
  shift 2
  PGCONNECT_TIMEOUT=5 "$SLIPWAY_PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 \
    -h 127.0.0.1 -p "$SLIPWAY_PG_PORT" -U "$user" -d "$db" "$@"
}

# Administration of the private cluster: as the postgres OS user over its unix socket (peer
# authentication), never over TCP.
slipway_pg_admin() { # args...
  runuser -u postgres -- "$SLIPWAY_PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 \
    -h "$SLIPWAY_PG_SOCKDIR" -p "$SLIPWAY_PG_PORT" -U postgres -d postgres "$@"
}

# Who may connect how: the postgres superuser only through the socket as the postgres OS user;
# everyone else with a password (Slipway's role included), over loopback only.
slipway_pg_hba() { # data dir
  cat >"$1/pg_hba.conf" <<HBA
# Written by scripts/lib/services.sh on every start.
local all postgres peer
host all postgres 0.0.0.0/0 reject
host all postgres ::/0 reject
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
HBA
  chown postgres:postgres "$1/pg_hba.conf"
}

# A private cluster owned by the postgres OS user on 127.0.0.1:$SLIPWAY_PG_PORT, with the role
# and database `slipway`. The role has a password (kept in the state dir) and may create
# databases (the tests clone theirs from a template), and nothing more: not a superuser.
slipway_start_postgres() {
  SLIPWAY_PG_PORT=${SLIPWAY_PG_PORT:-5433}
  local port=$SLIPWAY_PG_PORT dir=$SLIPWAY_STATE_DIR/postgres
  local data=$dir/data sockdir=$dir log=$SLIPWAY_LOGS/postgres.log t0 how=reused
  t0=$(slipway_now_ms)
  if ((${#sockdir} + 20 > 107)); then sockdir=$(slipway_short_run_dir)/pg; fi
  SLIPWAY_PG_SOCKDIR=$sockdir
  local password_file=$dir/slipway.password password
  mkdir -p "$dir"
  if [ ! -s "$password_file" ]; then
    (umask 077 && od -An -tx1 -N24 /dev/urandom | tr -d ' \n' >"$password_file")
  fi
  password=$(cat "$password_file")
  export DATABASE_URL="postgres://slipway:$password@127.0.0.1:$port/slipway"

  if ! "$SLIPWAY_PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port"; then
    how=started
    slipway_need_root "starting Postgres"
    mkdir -p "$dir" "$sockdir"
    chown postgres:postgres "$dir" "$sockdir"
    touch "$log"
    chown postgres:postgres "$log"
    if [ ! -f "$data/PG_VERSION" ]; then
      rm -rf "$data"
      runuser -u postgres -- "$SLIPWAY_PG_BIN/initdb" -D "$data" --auth=trust --username=postgres \
        --encoding=UTF8 --locale=C.UTF-8 >"$SLIPWAY_LOGS/initdb.log" 2>&1 \
        || slipway_fail postgres "$SLIPWAY_LOGS/initdb.log" "initdb failed"
    fi
    # On every start: a cluster initialised by an older script may lack the include.
    grep -qxF "include_if_exists = 'slipway.conf'" "$data/postgresql.conf" \
      || echo "include_if_exists = 'slipway.conf'" >>"$data/postgresql.conf"
    # Rewritten on every start, so port / socket changes apply.
    cat >"$data/slipway.conf" <<CONF
# Written by scripts/lib/services.sh on every start.
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$sockdir'
max_connections = 300
CONF
    chown postgres:postgres "$data/slipway.conf"
    slipway_pg_hba "$data"
    local fsync=${SLIPWAY_PG_FSYNC:-on}
    local pid='' tries
    if [ -f "$data/postmaster.pid" ]; then pid=$(head -n1 "$data/postmaster.pid"); fi
    if slipway_alive "$pid" postgres \
      && slipway_wait_for_owner "$pid" 60 postgres "$log" "$SLIPWAY_PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port"; then
      how="reused (was starting)"
    else
      slipway_say "postgres: starting on 127.0.0.1:$port (fsync=$fsync)"
      # pg_ctl -w returns once the server accepts connections, or fails as soon as the
      # postmaster exits (e.g. while the children of a killed one still hold its shared
      # memory: retried). It detaches the postmaster into its own session.
      for tries in 1 2 3 4; do
        if slipway_pg_ctl_start "$data" "$log" "$fsync"; then break; fi
        if ((tries == 4)); then
          slipway_fail postgres "$log" "pg_ctl start failed 4 times (see also $SLIPWAY_LOGS/pg_ctl.log)"
        fi
        sleep 1
      done
      SLIPWAY_STARTED+=("pg:$data")
    fi
    slipway_wait_for postgres 60 "$log" "" "$SLIPWAY_PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port"
  fi

  # Role and database (also on a reused cluster: it may be someone else's fresh one, or one an
  # older script set up with a superuser role and no password).
  if [ "$(PGPASSWORD=$password slipway_psql slipway slipway -c 'SELECT rolsuper FROM pg_roles WHERE rolname = current_user' 2>/dev/null)" != f ]; then
    [ -f "$data/PG_VERSION" ] \
      || slipway_fail postgres "$log" "something answers on 127.0.0.1:$port that is not this state dir's cluster and does not let slipway in; stop it or set SLIPWAY_PG_PORT"
    slipway_pg_hba "$data"
    runuser -u postgres -- "$SLIPWAY_PG_BIN/pg_ctl" -D "$data" reload >>"$SLIPWAY_LOGS/pg_ctl.log" 2>&1 || true
    local role=present
    if [ "$(slipway_pg_admin -c "SELECT 1 FROM pg_roles WHERE rolname = 'slipway'")" != 1 ]; then role=; fi
    slipway_pg_admin -c "$([ -n "$role" ] && echo ALTER || echo CREATE) ROLE slipway WITH LOGIN NOSUPERUSER CREATEDB NOCREATEROLE PASSWORD '$password'" >/dev/null
    if [ "$(slipway_pg_admin -c "SELECT 1 FROM pg_database WHERE datname = 'slipway'")" != 1 ]; then
      slipway_pg_admin -c 'CREATE DATABASE slipway OWNER slipway' >/dev/null
    fi
    [ "$(PGPASSWORD=$password slipway_psql slipway slipway -c 'SELECT rolsuper FROM pg_roles WHERE rolname = current_user')" = f ] \
      || slipway_fail postgres "$log" "could not set up role/database slipway"
  fi
  slipway_note postgres "$how" "$t0"
}

# The engine's CLI with a client config of the stack's own (its registry login lives there).
slipway_docker() {
  "$SLIPWAY_DOCKER_CLI" --config "$SLIPWAY_DOCKER_CONFIG" -H "$SLIPWAY_DOCKER_HOST" "$@"
}

# The functions' network: the engine that runs (and builds) functions lives in a network
# namespace of its own, joined to this one by a veth pair (the "uplink"). Its engine keeps
# --iptables=true there, where the rules touch nothing outside, and scripts/lib/function-firewall.sh
# decides what a function may reach. This namespace gets only the uplink's address and one
# route to the functions' address pool, through the uplink: the API reaches a function at its
# container's own address, and nothing of this namespace is a function's to reach.
#   SLIPWAY_RUNTIME_POOL     functions' addresses (a free /16 in 10.224.0.0/12 by default)
#   SLIPWAY_FUNCTION_EGRESS  none (default) | public; SLIPWAY_FUNCTION_EGRESS_ALLOW: CIDRs
slipway_start_runtime_net() {
  local hash ns veth state n p t0 how=reused
  t0=$(slipway_now_ms)
  hash=$(printf '%s' "$SLIPWAY_STATE_DIR" | sha256sum | cut -c1-6)
  ns=slwrt-$hash veth=slwu$hash state=$SLIPWAY_STATE_DIR/docker/net.env
  mkdir -p "$SLIPWAY_STATE_DIR/docker"
  if [ -f "$state" ]; then
    # shellcheck source=/dev/null
    source "$state"
  fi
  if ! ip netns list | grep -qw "^$ns" || ! ip link show "$veth" >/dev/null 2>&1; then
    how=started
    slipway_need_root "creating the functions' network namespace"
    ip netns del "$ns" 2>/dev/null || true
    ip link del "$veth" 2>/dev/null || true
    # A /30 and a /16 nobody here routes yet, so two clones on one machine never overlap. The
    # search starts from the state dir's hash: another stack whose uplink is down for a moment
    # (its address then invisible here) is still unlikely to be handed the same /30.
    SLIPWAY_RUNTIME_UPLINK=
    local first=$((16#${hash:0:2})) i
    for ((i = 0; i < 256; i++)); do
      n=$(((first + i) % 256))
      if ! ip -4 addr show | grep -q " 10\.223\.$n\.[0-9]*/30"; then
        SLIPWAY_RUNTIME_UPLINK=10.223.$n
        break
      fi
    done
    [ -n "$SLIPWAY_RUNTIME_UPLINK" ] || slipway_die "no free uplink /30 in 10.223.0.0/16"
    if [ -z "${SLIPWAY_RUNTIME_POOL:-}" ] || ip -4 route show "$SLIPWAY_RUNTIME_POOL" | grep -q .; then
      SLIPWAY_RUNTIME_POOL=
      for ((p = 224; p < 240; p++)); do
        if ! ip -4 route show | grep -q "^10\.$p\."; then
          SLIPWAY_RUNTIME_POOL=10.$p.0.0/16
          break
        fi
      done
    fi
    [ -n "$SLIPWAY_RUNTIME_POOL" ] || slipway_die "no free /16 for functions in 10.224.0.0/12"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    # No IPv6 in there: a bridge's link-local address would be a way out of the rules below.
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip link add "$veth" type veth peer name uplink0 netns "$ns"
    ip addr add "$SLIPWAY_RUNTIME_UPLINK.1/30" dev "$veth"
    ip link set "$veth" up
    ip -n "$ns" addr add "$SLIPWAY_RUNTIME_UPLINK.2/30" dev uplink0
    ip -n "$ns" link set uplink0 up
    printf 'SLIPWAY_RUNTIME_UPLINK=%s\nSLIPWAY_RUNTIME_POOL=%s\n' \
      "$SLIPWAY_RUNTIME_UPLINK" "$SLIPWAY_RUNTIME_POOL" >"$state"
    SLIPWAY_STARTED+=("netns:$ns:$veth:$SLIPWAY_RUNTIME_POOL:$SLIPWAY_RUNTIME_UPLINK.2")
  fi
  # Also on reuse: the one route into the namespace is ours to keep.
  ip route replace "$SLIPWAY_RUNTIME_POOL" via "$SLIPWAY_RUNTIME_UPLINK.2" dev "$veth"
  # Should a stack's route ever be missing, its functions' addresses must fail here, not go
  # out through the default route: the whole range Slipway takes pools from is unreachable
  # unless a more specific route leads into some stack's namespace. Shared by every clone on
  # the machine and harmless, so it stays.
  ip route replace unreachable 10.224.0.0/12 metric 4000
  export SLIPWAY_RUNTIME_NETNS=$ns SLIPWAY_RUNTIME_POOL
  # The platform's address as the functions' engine sees it: the registry listens here.
  export SLIPWAY_PLATFORM_ADDR=$SLIPWAY_RUNTIME_UPLINK.1
  slipway_note "functions' network ($ns, pool $SLIPWAY_RUNTIME_POOL)" "$how" "$t0"
}

# Applies the function firewall inside the runtime namespace (every start: the rules are the
# engine's host firewall, and a reused engine may have been started by an older script).
slipway_apply_function_firewall() {
  SLIPWAY_FUNCTION_BRIDGES='slw+' SLIPWAY_UPLINK=uplink0 \
    ip netns exec "$SLIPWAY_RUNTIME_NETNS" "$SLIPWAY_REPO/scripts/lib/function-firewall.sh" \
    >>"$SLIPWAY_LOGS/firewall.log" 2>&1 \
    || slipway_fail firewall "$SLIPWAY_LOGS/firewall.log" "could not apply the function firewall in $SLIPWAY_RUNTIME_NETNS"
}

# A private Docker engine in the functions' namespace: the function runtime and, through its
# embedded BuildKit, the builder. It is reached through its unix socket, which no namespace
# hides. Its own mount namespace gets a sysfs of the network namespace (else dockerd finds no
# devices cgroup) and private /run/docker and /run/containerd.
slipway_start_dockerd() {
  local dir=$SLIPWAY_STATE_DIR/docker log=$SLIPWAY_LOGS/dockerd.log sock exec t0 how=reused pid=
  t0=$(slipway_now_ms)
  [ -n "${SLIPWAY_RUNTIME_NETNS:-}" ] || slipway_start_runtime_net
  sock=$dir/docker.sock exec=$dir/exec
  # The exec root holds containerd's sockets too (exec/containerd/containerd-debug.sock).
  if ((${#dir} > 60)); then
    sock=$(slipway_short_run_dir)/docker.sock exec=$(slipway_short_run_dir)/exec
  fi
  export SLIPWAY_DOCKER_HOST="unix://$sock"
  if ! slipway_docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
    how=started
    slipway_need_root "starting dockerd"
    mkdir -p "$dir/data" "$exec" "$dir/cgroup" "$(dirname "$sock")" /run/docker /run/containerd
    if [ -f "$dir/docker.pid" ]; then pid=$(cat "$dir/docker.pid"); fi
    if slipway_alive "$pid" dockerd \
      && slipway_wait_for_owner "$pid" 60 dockerd "$log" slipway_docker version --format '{{.Server.Version}}'; then
      how="reused (was starting)"
      pid=
    else
      rm -f "$sock" "$dir/docker.pid"
      slipway_say "dockerd: starting on $sock in network namespace $SLIPWAY_RUNTIME_NETNS"
      local registry_port=${SLIPWAY_REGISTRY_PORT:-5000}
      # shellcheck disable=SC2016  # expanded by the inner shell
      slipway_spawn dockerd "$log" nsenter --net="/run/netns/$SLIPWAY_RUNTIME_NETNS" \
        unshare -m --propagation private sh -c '
          set -e
          mount --rbind /sys/fs/cgroup "$0/cgroup"
          mount -t sysfs sysfs /sys
          mount --rbind "$0/cgroup" /sys/fs/cgroup
          umount -R "$0/cgroup"
          mount -t tmpfs tmpfs /run/docker
          mount -t tmpfs tmpfs /run/containerd
          shift
          exec "$@"' "$dir" - \
        /usr/sbin/dockerd --iptables=true --ip-masq=false --bridge=none \
        --default-address-pool "base=$SLIPWAY_RUNTIME_POOL,size=28" \
        --insecure-registry "$SLIPWAY_PLATFORM_ADDR:$registry_port" \
        --storage-driver=vfs --data-root "$dir/data" --exec-root "$exec" \
        -H "unix://$sock" --pidfile "$dir/docker.pid"
      pid=$SLIPWAY_SPAWNED_PID
    fi
    slipway_wait_for dockerd 60 "$log" "$pid" slipway_docker version --format '{{.Server.Version}}'
  fi
  slipway_apply_function_firewall
  slipway_note dockerd "$how" "$t0"
}

# Debian's docker-registry (distribution 2.8) on the uplink's address in this namespace
# ($SLIPWAY_PLATFORM_ADDR:$SLIPWAY_REGISTRY_PORT): the functions' engine pushes and pulls there,
# this namespace's processes reach it as a local address, and the function firewall keeps
# functions from it.
slipway_start_registry() {
  local port=${SLIPWAY_REGISTRY_PORT:-5000} dir=$SLIPWAY_STATE_DIR/registry
  local log=$SLIPWAY_LOGS/registry.log t0 how=reused
  t0=$(slipway_now_ms)
  [ -n "${SLIPWAY_PLATFORM_ADDR:-}" ] || slipway_start_runtime_net
  local addr=$SLIPWAY_PLATFORM_ADDR:$port
  # Plain HTTP off loopback: the engine has it as --insecure-registry, Slipway as this.
  export SLIPWAY_REGISTRY=$addr SLIPWAY_INSECURE_REGISTRIES=$addr
  # A login, made once and kept with the state: Slipway, the engine and the tests use it.
  mkdir -p "$dir"
  if [ ! -s "$dir/password" ]; then
    (umask 077 && od -An -tx1 -N24 /dev/urandom | tr -d ' \n' >"$dir/password")
  fi
  export SLIPWAY_REGISTRY_USERNAME=slipway SLIPWAY_REGISTRY_PASSWORD
  SLIPWAY_REGISTRY_PASSWORD=$(cat "$dir/password")
  if ! slipway_registry_answers "$addr"; then
    how=started
    mkdir -p "$dir/data"
    htpasswd -Bbn "$SLIPWAY_REGISTRY_USERNAME" "$SLIPWAY_REGISTRY_PASSWORD" >"$dir/htpasswd" 2>>"$log" \
      || slipway_fail registry "$log" "htpasswd failed"
    cat >"$dir/config.yml" <<YAML
# Written by scripts/lib/services.sh.
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
  addr: $addr
  secret: slipway-local-registry-only
auth:
  htpasswd:
    realm: slipway-registry
    path: $dir/htpasswd
YAML
    slipway_say "registry: starting on $addr"
    slipway_spawn registry "$log" docker-registry serve "$dir/config.yml"
    slipway_wait_for registry 30 "$log" "$SLIPWAY_SPAWNED_PID" slipway_registry_answers "$addr"
  fi
  # The engine's client keeps the login in a config directory of the stack's own.
  printf '%s' "$SLIPWAY_REGISTRY_PASSWORD" \
    | slipway_docker login -u "$SLIPWAY_REGISTRY_USERNAME" --password-stdin "$addr" >>"$log" 2>&1 \
    || slipway_fail registry "$log" "docker login $addr failed"
  slipway_note registry "$how" "$t0"
}

# The registry answers with our login (a registry without it, or with another, does not count).
slipway_registry_answers() { # host:port
  curl -fsS -m 5 -u "$SLIPWAY_REGISTRY_USERNAME:$SLIPWAY_REGISTRY_PASSWORD" "http://$1/v2/" >/dev/null 2>&1
}

slipway_moto_ok() { "$SLIPWAY_MOTO_VENV/bin/python" -c 'import moto.server' >/dev/null 2>&1; }

# Creates moto's virtualenv outside the clone (reused across runs and clones).
slipway_install_moto() {
  local log=$SLIPWAY_LOGS/moto-install.log py
  slipway_moto_ok && return 0
  slipway_say "moto: installing moto[server] into $SLIPWAY_MOTO_VENV"
  mkdir -p "$(dirname "$SLIPWAY_MOTO_VENV")"
  : >"$log"
  for py in /usr/bin/python3 "$(command -v python3 || true)"; do
    if [ -z "$py" ] || [ ! -x "$py" ]; then continue; fi
    rm -rf "$SLIPWAY_MOTO_VENV"
    if "$py" -m venv "$SLIPWAY_MOTO_VENV" >>"$log" 2>&1; then break; fi
  done
  if [ ! -x "$SLIPWAY_MOTO_VENV/bin/pip" ]; then
    # Debian's python3 needs python3-venv for ensurepip.
    slipway_apt_install python3 python3-venv
    rm -rf "$SLIPWAY_MOTO_VENV"
    /usr/bin/python3 -m venv "$SLIPWAY_MOTO_VENV" >>"$log" 2>&1 \
      || slipway_fail "S3 (moto)" "$log" "python3 -m venv failed"
  fi
  "$SLIPWAY_MOTO_VENV/bin/pip" install --disable-pip-version-check 'moto[server]' >>"$log" 2>&1 \
    || slipway_fail "S3 (moto)" "$log" "pip install 'moto[server]' failed"
  slipway_moto_ok || slipway_fail "S3 (moto)" "$log" "moto is not importable after the install"
}

# schemathesis (PyPI), which the OpenAPI test (tests/e2e/openapi.rs) runs against a live stack:
# a virtualenv outside the clone, reused across runs, at a pinned version.
SLIPWAY_SCHEMATHESIS_VERSION=4.32.5
slipway_ensure_schemathesis() {
  local venv=${SLIPWAY_SCHEMATHESIS_VENV:-/var/cache/slipway/schemathesis-venv} t0 how=reused
  local log=$SLIPWAY_LOGS/schemathesis-install.log
  t0=$(slipway_now_ms)
  export SLIPWAY_SCHEMATHESIS=$venv/bin/schemathesis
  if [ "$("$SLIPWAY_SCHEMATHESIS" --version 2>/dev/null)" != "schemathesis, version $SLIPWAY_SCHEMATHESIS_VERSION" ]; then
    how=installed
    slipway_say "schemathesis: installing $SLIPWAY_SCHEMATHESIS_VERSION into $venv"
    mkdir -p "$(dirname "$venv")"
    : >"$log"
    if [ ! -x "$venv/bin/pip" ]; then
      rm -rf "$venv"
      /usr/bin/python3 -m venv "$venv" >>"$log" 2>&1 || {
        slipway_apt_install python3 python3-venv
        rm -rf "$venv"
        /usr/bin/python3 -m venv "$venv" >>"$log" 2>&1 \
          || slipway_fail schemathesis "$log" "python3 -m venv failed"
      }
    fi
    "$venv/bin/pip" install --disable-pip-version-check "schemathesis==$SLIPWAY_SCHEMATHESIS_VERSION" >>"$log" 2>&1 \
      || slipway_fail schemathesis "$log" "pip install schemathesis failed"
  fi
  slipway_note schemathesis "$how" "$t0"
}

slipway_s3_bucket_ok() {
  curl -fsS -m 5 -o /dev/null -I "$SLIPWAY_TEST_S3_ENDPOINT/$SLIPWAY_TEST_S3_BUCKET"
}

# Exports the S3 variables if moto already answers with the bucket (dev.sh does not start it,
# but keeps services.env complete when test.sh did).
slipway_detect_s3() {
  local port=${SLIPWAY_S3_PORT:-5002}
  curl -fsS -m 2 -o /dev/null -I "http://127.0.0.1:$port/slipway-test" 2>/dev/null || return 0
  export SLIPWAY_TEST_S3_ENDPOINT="http://127.0.0.1:$port" SLIPWAY_TEST_S3_BUCKET=slipway-test
  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
}

# moto's server as the S3-compatible store for the tests, with the bucket slipway-test.
slipway_start_s3() {
  local port=${SLIPWAY_S3_PORT:-5002} log=$SLIPWAY_LOGS/moto.log t0 how=reused
  t0=$(slipway_now_ms)
  export SLIPWAY_TEST_S3_ENDPOINT="http://127.0.0.1:$port" SLIPWAY_TEST_S3_BUCKET=slipway-test
  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
  if ! curl -fsS -m 5 -o /dev/null "http://127.0.0.1:$port/moto-api/" 2>/dev/null; then
    how=started
    slipway_moto_ok || how="installed+started"
    slipway_install_moto
    slipway_say "S3 (moto): starting on 127.0.0.1:$port"
    slipway_spawn moto "$log" "$SLIPWAY_MOTO_VENV/bin/moto_server" -H 127.0.0.1 -p "$port"
    slipway_wait_for "S3 (moto)" 60 "$log" "$SLIPWAY_SPAWNED_PID" \
      curl -fsS -m 5 -o /dev/null "http://127.0.0.1:$port/moto-api/"
  fi
  if ! slipway_s3_bucket_ok 2>/dev/null; then
    curl -fsS -m 10 -o /dev/null -X PUT "$SLIPWAY_TEST_S3_ENDPOINT/$SLIPWAY_TEST_S3_BUCKET" >>"$log" 2>&1 || true
    slipway_s3_bucket_ok >>"$log" 2>&1 \
      || slipway_fail "S3 (moto)" "$log" "could not create bucket $SLIPWAY_TEST_S3_BUCKET"
  fi
  slipway_note "S3 (moto)" "$how" "$t0"
}

# Runs RabbitMQ's own tools against the private broker: its node name, and the Erlang cookie
# kept under the state directory (HOME is where Erlang looks for it).
slipway_rabbitmqctl() {
  HOME=$SLIPWAY_STATE_DIR/rabbitmq RABBITMQ_NODENAME=$SLIPWAY_RABBITMQ_NODE \
    /usr/lib/rabbitmq/bin/rabbitmqctl "$@"
}

# A private RabbitMQ (Debian's) on loopback for the event stream's test: its own node name,
# data and logs under .slipway/rabbitmq, AMQP on SLIPWAY_AMQP_PORT (5674) and Erlang
# distribution on the port 20000 above it. Reused when its node already answers.
slipway_start_rabbitmq() {
  local port=${SLIPWAY_AMQP_PORT:-5674} dir=$SLIPWAY_STATE_DIR/rabbitmq
  local log=$SLIPWAY_LOGS/rabbitmq.log t0 how=reused
  t0=$(slipway_now_ms)
  export SLIPWAY_RABBITMQ_NODE=slipway-$port@localhost
  export SLIPWAY_TEST_AMQP_URL="amqp://guest:guest@127.0.0.1:$port/%2f"
  mkdir -p "$dir/mnesia" "$dir/log"
  if [ ! -s "$dir/.erlang.cookie" ]; then
    head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$dir/.erlang.cookie"
    chmod 0400 "$dir/.erlang.cookie"
  fi
  if ! slipway_rabbitmqctl -q await_startup --timeout 2 >/dev/null 2>&1; then
    how=started
    slipway_say "RabbitMQ: starting $SLIPWAY_RABBITMQ_NODE on 127.0.0.1:$port"
    slipway_spawn rabbitmq "$log" env HOME="$dir" RABBITMQ_NODENAME="$SLIPWAY_RABBITMQ_NODE" \
      RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$port" \
      RABBITMQ_DIST_PORT=$((port + 20000)) RABBITMQ_MNESIA_BASE="$dir/mnesia" \
      RABBITMQ_LOG_BASE="$dir/log" RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
      RABBITMQ_CONFIG_FILE="$dir/rabbitmq" \
      /usr/lib/rabbitmq/bin/rabbitmq-server
    slipway_wait_for "RabbitMQ" 90 "$log" "$SLIPWAY_SPAWNED_PID" \
      slipway_rabbitmqctl -q await_startup --timeout 5
  fi
  slipway_note "RabbitMQ" "$how" "$t0"
}

slipway_registry_has() { # repo tag
  local login=()
  if [ -n "${SLIPWAY_REGISTRY_USERNAME:-}" ]; then
    login=(-u "$SLIPWAY_REGISTRY_USERNAME:$SLIPWAY_REGISTRY_PASSWORD")
  fi
  curl -fsS -m 5 -o /dev/null -I "${login[@]}" \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$SLIPWAY_REGISTRY/v2/$1/manifests/$2"
}

# The offline function base image: Debian's static busybox with its applets linked under /bin,
# /sbin, /usr/bin, /usr/sbin, plus /tmp and a minimal /etc; in the engine as slipway/busybox:1
# and in the registry as $SLIPWAY_REGISTRY/slipway/busybox:1. Skipped if present in both.
slipway_make_base_image() {
  local image=$SLIPWAY_BASE_IMAGE remote=$SLIPWAY_REGISTRY/$SLIPWAY_BASE_IMAGE
  local log=$SLIPWAY_LOGS/base-image.log t0 how=reused imported=0
  t0=$(slipway_now_ms)
  if ! slipway_docker image inspect "$image" >/dev/null 2>&1; then
    how=built
    local busybox rootfs applet
    busybox=$(slipway_busybox_path)
    [ -n "$busybox" ] || slipway_die "base image: busybox-static is not installed"
    if ldd "$busybox" >/dev/null 2>&1; then
      slipway_die "base image: $busybox is dynamically linked (install busybox-static)"
    fi
    rootfs=$(mktemp -d "${TMPDIR:-/tmp}/slipway-rootfs.XXXXXX")
    # mktemp makes it 0700: the image's / must let functions that do not run as root in.
    chmod 0755 "$rootfs"
    mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/www"
    chmod 1777 "$rootfs/tmp"
    cp "$busybox" "$rootfs/bin/busybox"
    chmod 0755 "$rootfs/bin/busybox"
    while read -r applet; do
      if [ -z "$applet" ] || [ "$applet" = bin/busybox ]; then continue; fi
      mkdir -p "$rootfs/$(dirname "$applet")"
      ln -sf /bin/busybox "$rootfs/$applet"
    done < <("$busybox" --list-full)
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$rootfs/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
    if ! tar --numeric-owner --owner=0 --group=0 -C "$rootfs" -c . \
      | slipway_docker import \
        -c 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' -c 'CMD ["/bin/sh"]' \
        -m "Debian busybox-static, made by scripts/lib/services.sh" - "$image" >"$log" 2>&1; then
      rm -rf "$rootfs"
      slipway_fail "base image" "$log" "docker import failed"
    fi
    rm -rf "$rootfs"
    imported=1
  fi
  if [ "$imported" = 1 ] || ! slipway_registry_has slipway/busybox 1 2>/dev/null; then
    [ "$how" = built ] || how=pushed
    slipway_docker tag "$image" "$remote"
    slipway_docker push "$remote" >>"$log" 2>&1 || slipway_fail "base image" "$log" "push to $remote failed"
    slipway_registry_has slipway/busybox 1 || slipway_fail "base image" "$log" "$remote is not in the registry after the push"
  fi
  slipway_note "base image $image" "$how" "$t0"
}

# Unmounts every mount point at or below the given directories, deepest first.
slipway_unmount_under() { # dirs...
  local d m
  for d in "$@"; do
    while read -r m; do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done < <(awk -v d="$d" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/self/mounts | sort -r)
  done
}

# Stops, newest first, only what this invocation started (not services it reused).
slipway_stop_started() {
  local i entry pid name data t ns veth pool gateway
  for ((i = ${#SLIPWAY_STARTED[@]} - 1; i >= 0; i--)); do
    entry=${SLIPWAY_STARTED[i]}
    case $entry in
      netns:*)
        IFS=: read -r _ ns veth pool gateway <<<"$entry"
        slipway_say "removing the functions' network namespace $ns"
        # Only our own route: another clone's stack may route a pool of the same shape.
        ip route del "$pool" via "$gateway" dev "$veth" 2>/dev/null || true
        ip link del "$veth" 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
        rm -f "$SLIPWAY_STATE_DIR/docker/net.env"
        ;;
      pg:*)
        data=${entry#pg:}
        slipway_say "stopping postgres ($data)"
        runuser -u postgres -- "$SLIPWAY_PG_BIN/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
        ;;
      pid:*)
        pid=${entry#pid:}
        name=${pid#*:}
        pid=${pid%%:*}
        kill -0 "$pid" 2>/dev/null || continue
        slipway_say "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        # dockerd stops its containers and containerd first: give it time.
        for ((t = 0; t < 150; t++)); do
          kill -0 "$pid" 2>/dev/null || break
          sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then
          slipway_say "$name (pid $pid) ignored SIGTERM for 30s; killing it"
          kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
        if [ "$name" = dockerd ]; then slipway_unmount_under "${SLIPWAY_DOCKERD_DIRS[@]}"; fi
        ;;
    esac
  done
  SLIPWAY_STARTED=()
}

# Writes the exported service variables as KEY=VALUE lines (safe to `source`), so another shell
# (or `set -a; . .slipway/services.env; set +a`) can use the running services.
slipway_write_services_env() {
  local file=$SLIPWAY_STATE_DIR/services.env var
  {
    echo "# Written by scripts/$(basename "$0") on $(date -u +%FT%TZ)."
    for var in SLIPWAY_STATE_DIR DATABASE_URL SLIPWAY_DOCKER_HOST SLIPWAY_REGISTRY \
      SLIPWAY_INSECURE_REGISTRIES SLIPWAY_REGISTRY_USERNAME SLIPWAY_REGISTRY_PASSWORD \
      SLIPWAY_DOCKER_CONFIG SLIPWAY_RUNTIME_NETNS SLIPWAY_RUNTIME_POOL SLIPWAY_PLATFORM_ADDR \
      SLIPWAY_TEST_S3_ENDPOINT SLIPWAY_TEST_S3_BUCKET AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION \
      SLIPWAY_SCHEMATHESIS SLIPWAY_TEST_AMQP_URL SLIPWAY_RABBITMQ_NODE; do
      if [ -n "${!var:-}" ]; then printf '%s=%q\n' "$var" "${!var}"; fi
    done
  } >"$file.tmp"
  mv "$file.tmp" "$file"
  slipway_say "variables written to $file"
}

# One line naming the components in use and their versions.
slipway_summary() {
  local pg dockerd registry moto=
  pg=$("$SLIPWAY_PG_BIN/psql" -X -At "$DATABASE_URL" -c 'SHOW server_version' 2>/dev/null | cut -d' ' -f1) || true
  dockerd=$(slipway_docker version --format '{{.Server.Version}}' 2>/dev/null) || true
  registry=$(docker-registry --version 2>/dev/null | awk '{print $NF}') || true
  if [ -n "${SLIPWAY_TEST_S3_ENDPOINT:-}" ]; then
    moto=$("$SLIPWAY_MOTO_VENV/bin/python" -c 'import moto; print(moto.__version__)' 2>/dev/null) || true
    moto=", S3: moto ${moto:-?} at $SLIPWAY_TEST_S3_ENDPOINT"
  fi
  slipway_say "components: PostgreSQL ${pg:-?} at 127.0.0.1:${SLIPWAY_PG_PORT:-5433}, dockerd ${dockerd:-?} at $SLIPWAY_DOCKER_HOST, registry (distribution) ${registry:-?} at $SLIPWAY_REGISTRY$moto"
  if ((${#SLIPWAY_COMPONENTS[@]})); then
    slipway_say "this run: $(printf '%s; ' "${SLIPWAY_COMPONENTS[@]}")"
  fi
}
