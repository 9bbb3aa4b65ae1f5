#!/usr/bin/env bash
# The operators' views over a million jobs: the queues overview, filtered job pages and the
# metrics scrape, against count(*) over the same table in the same run.
#
#   bench/queues.sh                                  # 1,000,000 jobs, 200 calls per route
#   SLIPWAY_BENCH_JOBS=100000 SLIPWAY_BENCH_CALLS=50 bench/queues.sh
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
bench_example queue_bench
