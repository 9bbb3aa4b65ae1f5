#!/usr/bin/env bash
# The host firewall of a Docker host that runs Slipway functions: what a function may reach.
# Run it in the network namespace of the engine (scripts/lib/services.sh does, with
# `ip netns exec`), once the engine runs, and again whenever the policy changes: it replaces its
# own chains in one iptables-restore commit and hooks them into DOCKER-USER and INPUT.
#
# Every function network is a bridge whose name starts with the prefix in
# SLIPWAY_FUNCTION_BRIDGES (the worker names them `slw<function id>`). The rules:
#   - the platform (the API proxying invocations, readiness probes, lifecycle hooks) opens
#     connections to functions through SLIPWAY_UPLINK, and only through it;
#   - a function opens nothing to another function's network, to this host (its bridge
#     gateway, the engine's addresses) or, by default, to anything at all;
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
  echo "-A SLIPWAY-FORWARD -i $uplink -o $bridges -j ACCEPT"
  echo "-A SLIPWAY-FORWARD -o $bridges -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"
  echo "-A SLIPWAY-FORWARD -i $bridges -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"
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
  # The host's own addresses, the bridges' gateways included, are nobody's to call.
  echo "-A SLIPWAY-INPUT -i $bridges -j DROP"
  echo "-A SLIPWAY-INPUT -j RETURN"
  echo 'COMMIT'
)
iptables-restore --noflush <<<"$rules"
iptables -C DOCKER-USER -j SLIPWAY-FORWARD 2>/dev/null || iptables -I DOCKER-USER 1 -j SLIPWAY-FORWARD
iptables -C INPUT -j SLIPWAY-INPUT 2>/dev/null || iptables -I INPUT 1 -j SLIPWAY-INPUT
echo "function firewall applied: egress=$egress allow=${allow:-none} bridges=$bridges uplink=$uplink"
