#!/usr/bin/env bash
# Queue throughput: Slipway's job system (enqueue → handler start → acknowledged) with no-op
# jobs at fetch batch sizes 1, 10 and 100, as a fraction of pgbench doing the same
# `FOR UPDATE SKIP LOCKED` claim and ack on the same database in the same run; then enqueue →
# start and enqueue → ack p50/p99 at a paced 1,000 jobs/s (SLIPWAY_BENCH_RATE). Release build
# unless SLIPWAY_BENCH_PROFILE says otherwise. See tests/examples/job_throughput.rs.
#
#   bench/queue.sh                            # 20,000 jobs per run
#   SLIPWAY_BENCH_JOBS=5000 SLIPWAY_BENCH_RATE=50 bench/queue.sh  # fewer jobs, another pace
#   SLIPWAY_BENCH_PROFILE=dev bench/queue.sh  # debug build, for trying it out
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
SLIPWAY_BENCH_PROFILE=${SLIPWAY_BENCH_PROFILE:-release} bench_example job_throughput
