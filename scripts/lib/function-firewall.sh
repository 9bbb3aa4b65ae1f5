#!/usr/bin/env bash
# The host firewall of a Docker host that runs Slipway functions: what a function may reach.
# Run it in the network namespace of the engine (scripts/lib/services.sh does, with
# `ip netns exec`), once the engine runs, and again whenever the policy changes: it replaces its
# own chains in one iptables-restore commit and hooks them into DOCKER-USER and INPUT.
#
# Every function network is a bridge whose name starts with the prefix in
# SLIPWAY_FUNCTION_BRIDGES (the worker names them `slw<function id>`; on a swarm node it is
# docker_gwbridge, which the tasks of every tenant share). The rules:
#   - the platform (the API proxying invocations, readiness probes, lifecycle hooks) opens
#     connections to functions through SLIPWAY_UPLINK, and only through it;
#   - SLIPWAY_PLATFORM_SOURCES (comma-separated CIDRs, optional) narrows that to connections
#     from those sources: anything else coming in through SLIPWAY_UPLINK is dropped. Unset,
#     whatever comes in through SLIPWAY_UPLINK is the platform's;
#   - a function opens nothing to another function's network, to this host (its bridge
#     gateway, the engine's addresses) or, by default, to anything at all. That holds on a
#     shared bridge too: traffic between two containers of one bridge, which is bridged rather
#     than routed, is handed to iptables (net.bridge.bridge-nf-call-iptables=1, a setting of
#     this network namespace only) and dropped, whatever SLIPWAY_FUNCTION_EGRESS_ALLOW says;
#   - SLIPWAY_FUNCTION_EGRESS=public lets functions out, but never to loopback, link-local
#     (169.254.0.0/16: the instance metadata address), private, shared or multicast ranges;
#   - SLIPWAY_FUNCTION_EGRESS_ALLOW (comma-separated CIDRs) admits addresses explicitly, even
#     private ones, in either mode.
# Anything not admitted is dropped. A rule that cannot be applied fails the script, and the
# scripts that start the engine fail with it: no function runs without its firewall.
set -euo pipefail

bridges=${SLIPWAY_FUNCTION_BRIDGES:-slw+}
uplink=${SLIPWAY_UPLINK:?SLIPWAY_UPLINK names the interface the platform comes in through}
egress=${SLIPWAY_FUNCTION_EGRESS:-none}
allow=${SLIPWAY_FUNCTION_EGRESS_ALLOW:-}
platform=${SLIPWAY_PLATFORM_SOURCES:-}
# Never reachable under `public`: what RFC 6890 calls special purpose, plus the host itself.
closed="0.0.0.0/8 10.0.0.0/8 100.64.0.0/10 127.0.0.0/8 169.254.0.0/16 172.16.0.0/12
  192.0.0.0/24 192.168.0.0/16 198.18.0.0/15 224.0.0.0/4 240.0.0.0/4 ${SLIPWAY_HOST_ADDRESSES:-}"

case $egress in
  none | public) ;;
  *)
    echo "SLIPWAY_FUNCTION_EGRESS must be none or public, not '$egress'" >&2
    exit 2
    ;;
esac

# The platform's sources, checked here: a word iptables-restore would read as an option must
# not get into the rules, and a list with no address in it must not admit nobody by accident.
sources=()
if [ -n "$platform" ]; then
  IFS=, read -ra listed <<<"$platform"
  for cidr in "${listed[@]}"; do
    cidr=${cidr// /}
    [ -n "$cidr" ] || continue
    if ! [[ $cidr =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}(/[0-9]{1,2})?$ ]]; then
      echo "SLIPWAY_PLATFORM_SOURCES: '$cidr' is not an IPv4 address or CIDR" >&2
      exit 2
    fi
    sources+=("$cidr")
  done
  if ((${#sources[@]} == 0)); then
    echo "SLIPWAY_PLATFORM_SOURCES='$platform' names no source; unset it to admit the whole uplink" >&2
    exit 2
  fi
fi

# Two containers on one bridge talk through the bridge, not through the routing table: the
# rules below see that traffic only if the bridge passes it to iptables. The setting belongs to
# this network namespace, so the host's own is left alone. br_netfilter is what provides it
# (built in, or the module dockerd itself loads); without it nothing runs unfiltered: fail.
if ! sysctl -q -w net.bridge.bridge-nf-call-iptables=1 >/dev/null 2>&1; then
  modprobe br_netfilter 2>/dev/null || true
  if ! sysctl -q -w net.bridge.bridge-nf-call-iptables=1 >/dev/null; then
    echo "cannot set net.bridge.bridge-nf-call-iptables=1: bridged traffic would go unfiltered" >&2
    exit 1
  fi
fi

# Docker makes DOCKER-USER with its first bridge network and then only keeps its jump first in
# FORWARD; making it now means the rules hold before any function network exists.
if ! iptables -nL DOCKER-USER >/dev/null 2>&1; then
  iptables -N DOCKER-USER
  iptables -A DOCKER-USER -j RETURN
fi
iptables -C FORWARD -j DOCKER-USER 2>/dev/null || iptables -I FORWARD 1 -j DOCKER-USER
# Routed traffic nobody admitted goes nowhere (Docker sets the same policy once it forwards).
iptables -P FORWARD DROP

rules=$(
  echo '*filter'
  # Declaring a chain in a --noflush restore empties it: the whole set is replaced at once.
  echo ':SLIPWAY-FORWARD - [0:0]'
  echo ':SLIPWAY-INPUT - [0:0]'
  # First: from a function network into a function network (another one, or the same shared
  # bridge) nothing passes, not even what an egress allowance would admit.
  echo "-A SLIPWAY-FORWARD -i $bridges -o $bridges -j DROP"
  if ((${#sources[@]})); then
    for cidr in "${sources[@]}"; do
      echo "-A SLIPWAY-FORWARD -i $uplink -o $bridges -s $cidr -j ACCEPT"
    done
  else
    echo "-A SLIPWAY-FORWARD -i $uplink -o $bridges -j ACCEPT"
  fi
  echo "-A SLIPWAY-FORWARD -o $bridges -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"
  echo "-A SLIPWAY-FORWARD -i $bridges -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"
  # The host's own addresses (SLIPWAY_HOST_ADDRESSES: on a swarm, the nodes' lan, where the
  # platform's own processes may listen and admit the nodes as their callers) stay closed
  # whatever an allowance says.
  for cidr in ${SLIPWAY_HOST_ADDRESSES:-}; do
    echo "-A SLIPWAY-FORWARD -i $bridges -d $cidr -j DROP"
  done
  IFS=, read -ra admitted <<<"$allow"
  for cidr in "${admitted[@]}"; do
    cidr=${cidr// /}
    [ -n "$cidr" ] && echo "-A SLIPWAY-FORWARD -i $bridges -d $cidr -j ACCEPT"
  done
  if [ "$egress" = public ]; then
    for cidr in $closed; do
      echo "-A SLIPWAY-FORWARD -i $bridges -d $cidr -j DROP"
    done
    echo "-A SLIPWAY-FORWARD -i $bridges ! -o $bridges -j ACCEPT"
  fi
  echo "-A SLIPWAY-FORWARD -i $bridges -j DROP"
  echo "-A SLIPWAY-FORWARD -o $bridges -j DROP"
  echo "-A SLIPWAY-FORWARD -j RETURN"
  # The host's own addresses, the bridges' gateways included, are nobody's to call; what comes
  # back from a function on a connection the host opened (the platform on a node's host network
  # calling a task of that node) is an answer, not a call.
  echo "-A SLIPWAY-INPUT -i $bridges -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"
  echo "-A SLIPWAY-INPUT -i $bridges -j DROP"
  echo "-A SLIPWAY-INPUT -j RETURN"
  echo 'COMMIT'
)
iptables-restore --noflush <<<"$rules"
iptables -C DOCKER-USER -j SLIPWAY-FORWARD 2>/dev/null || iptables -I DOCKER-USER 1 -j SLIPWAY-FORWARD
iptables -C INPUT -j SLIPWAY-INPUT 2>/dev/null || iptables -I INPUT 1 -j SLIPWAY-INPUT
echo "function firewall applied: egress=$egress allow=${allow:-none} bridges=$bridges uplink=$uplink platform=${platform:-any}"
