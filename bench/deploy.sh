#!/usr/bin/env bash
# The deploy pipeline's published figures (issue 17), release build: per-stage p50/p99 over 50
# deploys, identical redeploys, 20 and 100 distinct functions deployed at once, and the control
# plane's own share. See tests/examples/deploy_bench.rs.
#
#   bench/deploy.sh
#   SLIPWAY_BENCH_DEPLOYS=100 SLIPWAY_BENCH_WIDE=50 bench/deploy.sh
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
SLIPWAY_BENCH_PROFILE=${SLIPWAY_BENCH_PROFILE:-release} bench_example deploy_bench
