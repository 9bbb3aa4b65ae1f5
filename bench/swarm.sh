#!/usr/bin/env bash
# The Swarm runtime beside the one-engine runtime, in one run: deploy → serving, cold wake
# (0 → 1 replica → first answer) and, on the swarm, recovery after the node that runs the task
# stops. Needs the 3-node swarm, which the services script starts.
#
#   bench/swarm.sh                                    # 5 rounds, 2 node stops
#   SLIPWAY_BENCH_ROUNDS=10 SLIPWAY_BENCH_NODE_STOPS=3 bench/swarm.sh
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
bench_example swarm_lifecycle
