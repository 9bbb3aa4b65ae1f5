#!/usr/bin/env bash
# How fast push webhooks are answered: a new push and a redelivery, against GET /healthz (one
# Postgres round trip) in the same run.
#
#   bench/webhook-latency.sh                     # 1000 sequential calls of each kind
#   SLIPWAY_BENCH_CALLS=5000 bench/webhook-latency.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SLIPWAY_SERVICES_ONLY=1 SLIPWAY_KEEP_SERVICES=1 scripts/test.sh >/dev/null
set -a
# shellcheck source=/dev/null
. .slipway/services.env
set +a
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/slipway/target} SQLX_OFFLINE=true
# SLIPWAY_BENCH_PROFILE=release for absolute figures; the default debug build is enough for the
# ratios and needs no second build of the whole tree.
RUST_LOG=${RUST_LOG:-warn} cargo run -q --profile "${SLIPWAY_BENCH_PROFILE:-dev}" \
  -p slipway-tests --example webhook_latency
