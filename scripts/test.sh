#!/usr/bin/env bash
# The single test command (`.ci/run` runs exactly this): installs what is missing, starts (or
# reuses) Postgres, a Docker engine (runtime + embedded BuildKit), a registry and moto's S3
# server, makes the offline base image, starts a 3-node Docker Swarm (scripts/swarm.sh), makes
# Slipway's own image (scripts/image.sh), then runs rustfmt, clippy, the Terraform checks and
# every test against them.
# On exit it stops what it started (set SLIPWAY_KEEP_SERVICES=1 to leave them running).
#
#   SLIPWAY_SERVICES_ONLY=1 scripts/test.sh   # start the services, write .slipway/services.env, exit 0
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/services.sh
source scripts/lib/services.sh
# shellcheck source=scripts/lib/runtimes.sh
source scripts/lib/runtimes.sh

# shellcheck disable=SC2317  # invoked from the traps
cleanup() {
  trap - INT TERM EXIT
  if [ "${SLIPWAY_KEEP_SERVICES:-0}" != 1 ]; then
    # The swarm pulls from the registry below: it goes first.
    if [ "$swarm_started" = 1 ]; then scripts/swarm.sh down || true; fi
    slipway_stop_started
  fi
}
swarm_started=0
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap 'cleanup' EXIT

# Throwaway test data: no fsync when this script starts the cluster.
export SLIPWAY_PG_FSYNC=${SLIPWAY_PG_FSYNC:-off}
slipway_lock
slipway_ensure_packages
slipway_start_postgres
slipway_start_dockerd
slipway_start_registry
slipway_start_s3
slipway_start_rabbitmq
slipway_make_base_image
slipway_make_runtime_images
slipway_ensure_schemathesis
slipway_unlock
slipway_write_services_env
# The 3-node Docker Swarm the swarm runtime's tests run on, pulling from the registry above;
# reused when it is up already, stopped on exit when this script started it.
[ -f "$SLIPWAY_STATE_DIR/swarm.env" ] || swarm_started=1
scripts/swarm.sh up
set -a
# shellcheck source=/dev/null
source "$SLIPWAY_STATE_DIR/swarm.env"
set +a
slipway_summary

if [ "${SLIPWAY_SERVICES_ONLY:-0}" = 1 ]; then
  trap - INT TERM EXIT
  slipway_say "services up (left running); variables in $SLIPWAY_STATE_DIR/services.env"
  exit 0
fi

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/slipway/target}
# CI builds a fresh clone once: incremental caches would only pile up in the shared target dir
# between runs (tens of GB on this machine's disk), never to be reused.
if [[ ${CI:-} == true ]]; then
  export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
  rm -rf "$CARGO_TARGET_DIR/debug/incremental"
fi
# SQL is checked at compile time against the committed .sqlx/, not a live database.
export SQLX_OFFLINE=true
export SLIPWAY_BUILDKIT=docker
# Test output stays readable; failures still show warnings and errors.
export RUST_LOG=${RUST_LOG:-warn}

failed=()
# Slipway's own image (release build), in the registry the swarm pulls from: the stack test
# (tests/e2e/stack.rs) deploys deploy/swarm/stack.yml with it.
image_t0=$(slipway_now_ms)
if SLIPWAY_STACK_IMAGE=$(scripts/image.sh --push "$SLIPWAY_REGISTRY/slipway/slipway"); then
  slipway_say "ok in $(slipway_since "$image_t0")s: scripts/image.sh -> $SLIPWAY_STACK_IMAGE"
else
  slipway_say "FAILED after $(slipway_since "$image_t0")s: scripts/image.sh"
  failed+=("scripts/image.sh")
fi
export SLIPWAY_STACK_IMAGE
run() {
  slipway_say "\$ $*"
  local t0
  t0=$(slipway_now_ms)
  if "$@"; then
    slipway_say "ok in $(slipway_since "$t0")s: $*"
  else
    local rc=$?
    slipway_say "FAILED ($rc) after $(slipway_since "$t0")s: $*"
    failed+=("$*")
    return "$rc"
  fi
}
run cargo fmt --all -- --check || true
run cargo clippy --workspace --all-targets --locked -- -D warnings || true
# The pipeline client (slipway without its `server` feature) builds, and links none of the server.
run scripts/check-client-deps.sh || true
# The Terraform under deploy/terraform, offline: parse, invariants, checkov, fmt.
run scripts/check-terraform.sh || true
tests=0
run cargo test --workspace --locked || tests=$?
# The fault campaign's short version (issue 16): ten kill -9 of workers during deploys and one
# Postgres restart, on processes of its own; any deployment lost, function stuck, version
# duplicated, instance orphaned or event lost fails it.
SLIPWAY_FAULT_KILLS=10 SLIPWAY_FAULT_REGISTRY=0 SLIPWAY_FAULT_ENGINE=0 run bench/faults.sh || true

slipway_summary
if ((${#failed[@]})); then
  slipway_say "failed: $(printf '[%s] ' "${failed[@]}")"
  # The tests' own status when they failed, else 1 for a failed check.
  if [ "$tests" != 0 ]; then exit "$tests"; fi
  exit 1
fi
slipway_say "all checks and tests passed"
