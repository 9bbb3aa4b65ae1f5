#!/usr/bin/env bash
# The test command: installs and starts Postgres, a Docker engine (runtime + BuildKit), a
# registry and an S3 server (reusing any already running under .slipway/), then runs the checks
# and every test against them. `.ci/run` calls exactly this script.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/services.sh
source scripts/lib/services.sh

export SLIPWAY_PG_FSYNC=${SLIPWAY_PG_FSYNC:-off}
slipway_ensure_packages
slipway_start_postgres
slipway_start_dockerd
slipway_start_registry
slipway_start_s3
slipway_make_base_image
slipway_write_services_env
if [ "${SLIPWAY_SERVICES_ONLY:-0}" = 1 ]; then
  slipway_say "services up; variables in $SLIPWAY_STATE_DIR/services.env"
  exit 0
fi
trap slipway_stop_started EXIT

slipway_say "components: $("$PG_BIN/postgres" --version); dockerd $(/usr/bin/docker -H "$SLIPWAY_DOCKER_HOST" version -f '{{.Server.Version}}'); $(docker-registry --version 2>&1 | head -n1); moto $("${SLIPWAY_MOTO_VENV:-/var/cache/slipway/moto-venv}/bin/pip" show moto 2>/dev/null | sed -n 's/^Version: //p')"

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/slipway/target}
# SQL is checked at compile time against the committed .sqlx/, not a live database.
export SQLX_OFFLINE=true
export RUST_LOG=${RUST_LOG:-warn}
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
