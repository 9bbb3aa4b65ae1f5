#!/usr/bin/env bash
# The embedded default: the whole stack on this machine. Starts (or reuses) Postgres, a Docker
# engine and a registry under .slipway/, builds the offline base image, then runs `slipway dev`
# (API + worker) in the foreground on 127.0.0.1:8080. Ctrl-C stops what this script started.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/services.sh
source scripts/lib/services.sh

slipway_ensure_packages
slipway_start_postgres
slipway_start_dockerd
slipway_start_registry
slipway_make_base_image
slipway_write_services_env
trap slipway_stop_started EXIT
if [ "${SLIPWAY_SERVICES_ONLY:-0}" = 1 ]; then
  trap - EXIT
  slipway_say "services up; variables in $SLIPWAY_STATE_DIR/services.env"
  exit 0
fi

mkdir -p "$SLIPWAY_STATE_DIR/archives"
export SLIPWAY_BUILDKIT=${SLIPWAY_BUILDKIT:-docker}
export SLIPWAY_ARCHIVE_STORE=${SLIPWAY_ARCHIVE_STORE:-file://$SLIPWAY_STATE_DIR/archives}
export SLIPWAY_BIND=${SLIPWAY_BIND:-127.0.0.1:8080}
export SLIPWAY_DEV_ENV_FILE=$SLIPWAY_STATE_DIR/dev.env
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/slipway/target}
export SQLX_OFFLINE=true
# Any other SLIPWAY_* variable the caller set is inherited as is.
cargo build -p slipway
"$CARGO_TARGET_DIR/debug/slipway" dev &
stack=$!
trap 'kill -INT $stack 2>/dev/null; wait $stack; slipway_stop_started' INT TERM EXIT
wait $stack
