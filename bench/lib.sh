# Sourced by the benchmarks: starts (or reuses) the real services, leaves them running, and
# exports their variables and the shared build settings.
# shellcheck shell=bash

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SLIPWAY_SERVICES_ONLY=1 SLIPWAY_KEEP_SERVICES=1 scripts/test.sh >/dev/null
set -a
# shellcheck source=/dev/null
. .slipway/services.env
# shellcheck source=/dev/null
. .slipway/swarm.env
set +a
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/slipway/target} SQLX_OFFLINE=true

# Runs one of the harness's benchmark examples. SLIPWAY_BENCH_PROFILE=release for absolute
# figures; the default debug build is enough for the ratios and needs no second build.
bench_example() { # name
  RUST_LOG=${RUST_LOG:-warn} cargo run -q --profile "${SLIPWAY_BENCH_PROFILE:-dev}" \
    -p slipway-tests --example "$1"
}
