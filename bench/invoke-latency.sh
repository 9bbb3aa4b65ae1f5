#!/usr/bin/env bash
# What the invocation proxy and event recording add to a call: the same function called
# straight on its container, through the proxy with events off, and with events on, in one run.
#
#   bench/invoke-latency.sh                     # 2000 sequential calls per path
#   SLIPWAY_BENCH_CALLS=10000 bench/invoke-latency.sh
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
  -p slipway-tests --example invoke_latency
