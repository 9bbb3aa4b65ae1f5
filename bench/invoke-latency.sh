#!/usr/bin/env bash
# What the invocation proxy and event recording add to a call: the same function called
# straight on its container, through the proxy with events off, and with events on, in one run.
#
#   bench/invoke-latency.sh                     # 2000 sequential calls per path
#   SLIPWAY_BENCH_CALLS=10000 bench/invoke-latency.sh
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
bench_example invoke_latency
