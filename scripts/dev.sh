#!/usr/bin/env bash
# The whole stack on this machine: installs what is missing, starts (or reuses) Postgres, a
# Docker engine (runtime + embedded BuildKit) in a network namespace of its own behind the
# function firewall, and a registry under .slipway/, makes the offline
# base image, then runs `slipway dev` (API + worker) in the foreground on 127.0.0.1:8080.
# Archives go to the local filesystem (.slipway/archives); no S3 here.
# Ctrl-C stops the stack and every service this script started (not those it reused).
#
#   SLIPWAY_SERVICES_ONLY=1 scripts/dev.sh   # start the services, write .slipway/services.env, exit 0
#   SLIPWAY_RUNTIME=swarm scripts/dev.sh     # functions on the 3-node swarm of scripts/swarm.sh
#                                            # (started if needed; builds stay on the engine above)
#
#   SLIPWAY_PROFILE=release scripts/dev.sh   # an optimised build (benchmarks, load tests)
#
# Any other SLIPWAY_* variable you set is passed through to `slipway dev`.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/services.sh
source scripts/lib/services.sh
# shellcheck source=scripts/lib/runtimes.sh
source scripts/lib/runtimes.sh

stack=
# shellcheck disable=SC2317  # invoked from the traps
stop_all() {
  trap - INT TERM EXIT
  if [ -n "$stack" ] && kill -0 "$stack" 2>/dev/null; then
    slipway_say "stopping slipway dev (pid $stack)"
    kill -TERM "$stack" 2>/dev/null || true
    wait "$stack" 2>/dev/null || true
  fi
  if [ "$swarm_started" = 1 ]; then scripts/swarm.sh down || true; fi
  slipway_stop_started
}
swarm_started=0
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap 'stop_all' EXIT

slipway_lock
slipway_ensure_packages
slipway_start_postgres
slipway_start_dockerd
slipway_start_registry
slipway_make_base_image
slipway_make_runtime_images
slipway_unlock
# S3 is not used by `slipway dev`; if test.sh's moto is up, services.env still records it
# (in a subshell: its AWS_* variables must not reach the stack).
(
  slipway_detect_s3
  slipway_write_services_env
)
case ${SLIPWAY_RUNTIME:-docker} in
  docker) ;;
  swarm)
    [ -f "$SLIPWAY_STATE_DIR/swarm.env" ] || swarm_started=1
    scripts/swarm.sh up
    set -a
    # shellcheck source=/dev/null
    source "$SLIPWAY_STATE_DIR/swarm.env"
    set +a
    ;;
  *) slipway_die "SLIPWAY_RUNTIME must be docker or swarm, not '$SLIPWAY_RUNTIME'" ;;
esac
slipway_summary

if [ "${SLIPWAY_SERVICES_ONLY:-0}" = 1 ]; then
  trap - INT TERM EXIT
  slipway_say "services up (left running); variables in $SLIPWAY_STATE_DIR/services.env"
  exit 0
fi

mkdir -p "$SLIPWAY_STATE_DIR/archives"
export SLIPWAY_BUILDKIT=${SLIPWAY_BUILDKIT:-docker}
export SLIPWAY_ARCHIVE_STORE=${SLIPWAY_ARCHIVE_STORE:-file://$SLIPWAY_STATE_DIR/archives}
export SLIPWAY_BIND=${SLIPWAY_BIND:-127.0.0.1:8080}
# Builds may start from the local base image, as the engine and the registry name it.
export SLIPWAY_BUILD_BASE_IMAGES=${SLIPWAY_BUILD_BASE_IMAGES:-$SLIPWAY_BASE_IMAGE,$SLIPWAY_REGISTRY/$SLIPWAY_BASE_IMAGE}
# One user on one machine: bindings may point at repositories on this filesystem.
export SLIPWAY_GIT_ALLOW_FILE=${SLIPWAY_GIT_ALLOW_FILE:-true}
# …and at git servers on this machine's loopback.
export SLIPWAY_GIT_ALLOW_NETWORKS=${SLIPWAY_GIT_ALLOW_NETWORKS:-127.0.0.0/8}
# Git secrets are stored sealed under this key; made once, kept with the stack's other state.
if [ -z "${SLIPWAY_SECRETS_KEY:-}" ]; then
  secrets_key_file=$SLIPWAY_STATE_DIR/secrets.key
  if [ ! -s "$secrets_key_file" ]; then
    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$secrets_key_file")
  fi
  SLIPWAY_SECRETS_KEY=$(cat "$secrets_key_file")
  export SLIPWAY_SECRETS_KEY
fi
export SLIPWAY_DEV_ENV_FILE=$SLIPWAY_STATE_DIR/dev.env
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/slipway/target}
export SQLX_OFFLINE=${SQLX_OFFLINE:-true}

slipway_say "cargo run --profile ${SLIPWAY_PROFILE:-dev} -p slipway -- dev (API on http://$SLIPWAY_BIND; credentials in $SLIPWAY_DEV_ENV_FILE)"
# In the background so the traps run at once on Ctrl-C; `cargo run` execs the binary, so $! is
# slipway itself once built.
cargo run --profile "${SLIPWAY_PROFILE:-dev}" -p slipway -- dev &
stack=$!
set +e
wait "$stack"
status=$?
set -e
stack=
exit "$status"
