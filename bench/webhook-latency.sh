#!/usr/bin/env bash
# How fast push webhooks are answered: a new push and a redelivery, against GET /healthz (one
# Postgres round trip) in the same run.
#
#   bench/webhook-latency.sh                     # 1000 sequential calls of each kind
#   SLIPWAY_BENCH_CALLS=5000 bench/webhook-latency.sh
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
bench_example webhook_latency
