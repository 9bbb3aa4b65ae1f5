#!/usr/bin/env bash
# Installs and starts the real components Slipway runs on, idempotently: a service that already
# answers is reused, never restarted. Sourced by scripts/dev.sh and scripts/test.sh.
# All state lives under $SLIPWAY_STATE_DIR (default <repo>/.slipway); logs under its logs/.

SLIPWAY_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export SLIPWAY_STATE_DIR=${SLIPWAY_STATE_DIR:-$SLIPWAY_REPO/.slipway}
SLIPWAY_LOGS=$SLIPWAY_STATE_DIR/logs
SLIPWAY_STARTED_PIDS=()
PG_BIN=/usr/lib/postgresql/15/bin
mkdir -p "$SLIPWAY_LOGS"

slipway_say() { printf '[services] %s\n' "$*" >&2; }
slipway_die() { printf '[services] error: %s\n' "$*" >&2; exit 1; }

# Polls "$@" until it succeeds or $deadline seconds pass.
slipway_wait_for() {
  local what=$1 deadline=$2 log=$3; shift 3
  local start=$SECONDS
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS - start > deadline )); then
      [ -f "$log" ] && tail -n 20 "$log" >&2
      slipway_die "$what did not come up within ${deadline}s (log: $log)"
    fi
    sleep 0.2
  done
  slipway_say "$what ready after $((SECONDS - start))s"
}

slipway_ensure_packages() {
  local missing=()
  [ -x "$PG_BIN/postgres" ] || missing+=(postgresql)
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v docker-registry >/dev/null || missing+=(docker-registry)
  [ -x /bin/busybox ] || missing+=(busybox-static)
  command -v curl >/dev/null || missing+=(curl)
  if ((${#missing[@]})); then
    slipway_say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >"$SLIPWAY_LOGS/apt.log" 2>&1 || slipway_die "apt-get update failed (log: $SLIPWAY_LOGS/apt.log)"
    apt-get install -y -q "${missing[@]}" >>"$SLIPWAY_LOGS/apt.log" 2>&1 \
      || slipway_die "apt-get install ${missing[*]} failed (log: $SLIPWAY_LOGS/apt.log)"
  fi
  # The Debian package starts a system dockerd on /run/docker.sock; Slipway runs its own.
}

# A private cluster owned by the postgres OS user, on 127.0.0.1:$SLIPWAY_PG_PORT.
slipway_start_postgres() {
  local port=${SLIPWAY_PG_PORT:-5433} dir=$SLIPWAY_STATE_DIR/postgres
  export DATABASE_URL="postgres://slipway@127.0.0.1:$port/slipway"
  if ! "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port"; then
    mkdir -p "$dir"
    chown postgres:postgres "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      su postgres -c "$PG_BIN/initdb -D '$dir/data' -A trust -U postgres" >"$SLIPWAY_LOGS/initdb.log" 2>&1 \
        || slipway_die "initdb failed (log: $SLIPWAY_LOGS/initdb.log)"
    fi
    local fsync=${SLIPWAY_PG_FSYNC:-on}
    touch "$SLIPWAY_LOGS/postgres.log"; chown postgres "$SLIPWAY_LOGS/postgres.log"
    su postgres -c "$PG_BIN/pg_ctl -D '$dir/data' -l '$SLIPWAY_LOGS/postgres.log' \
      -o \"-p $port -k '$dir' -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=$fsync\" start" >/dev/null \
      || slipway_die "postgres failed to start (log: $SLIPWAY_LOGS/postgres.log)"
    SLIPWAY_STARTED_PIDS+=("postgres:$dir/data")
    slipway_wait_for postgres 60 "$SLIPWAY_LOGS/postgres.log" "$PG_BIN/pg_isready" -h 127.0.0.1 -p "$port"
  else
    slipway_say "postgres already answers on $port; reusing it"
  fi
  local psql=("$PG_BIN/../bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1)
  [ -x "${psql[0]}" ] || psql[0]=psql
  "${psql[@]}" -tc "SELECT 1 FROM pg_roles WHERE rolname = 'slipway'" | grep -q 1 \
    || "${psql[@]}" -c "CREATE ROLE slipway LOGIN SUPERUSER" >/dev/null
  "${psql[@]}" -tc "SELECT 1 FROM pg_database WHERE datname = 'slipway'" | grep -q 1 \
    || "${psql[@]}" -c "CREATE DATABASE slipway OWNER slipway" >/dev/null
}

# A private Docker engine: the function runtime and, through its embedded BuildKit, the builder.
slipway_start_dockerd() {
  local dir=$SLIPWAY_STATE_DIR/docker sock
  sock=$dir/docker.sock
  # Unix socket paths are limited to 107 bytes.
  if (( ${#sock} > 100 )); then
    sock=/run/slipway-$(printf '%s' "$dir" | sha256sum | cut -c1-12)/docker.sock
  fi
  export SLIPWAY_DOCKER_HOST="unix://$sock"
  if /usr/bin/docker -H "$SLIPWAY_DOCKER_HOST" version >/dev/null 2>&1; then
    slipway_say "dockerd already answers on $sock; reusing it"
    return
  fi
  mkdir -p "$dir" "$(dirname "$sock")"
  rm -f "$sock"
  dockerd --iptables=false --ip-masq=false --bridge=none --storage-driver=vfs \
    --data-root "$dir/data" --exec-root "$dir/exec" --pidfile "$dir/docker.pid" \
    -H "unix://$sock" >"$SLIPWAY_LOGS/dockerd.log" 2>&1 &
  SLIPWAY_STARTED_PIDS+=("$!")
  slipway_wait_for dockerd 60 "$SLIPWAY_LOGS/dockerd.log" /usr/bin/docker -H "$SLIPWAY_DOCKER_HOST" version
}

slipway_start_registry() {
  local port=${SLIPWAY_REGISTRY_PORT:-5000} dir=$SLIPWAY_STATE_DIR/registry
  export SLIPWAY_REGISTRY="127.0.0.1:$port"
  if curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1; then
    slipway_say "registry already answers on $port; reusing it"
    return
  fi
  mkdir -p "$dir/data"
  cat >"$dir/config.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
YAML
  docker-registry serve "$dir/config.yml" >"$SLIPWAY_LOGS/registry.log" 2>&1 &
  SLIPWAY_STARTED_PIDS+=("$!")
  slipway_wait_for registry 30 "$SLIPWAY_LOGS/registry.log" curl -fsS "http://127.0.0.1:$port/v2/"
}

# moto's server as the S3-compatible object store for tests (a venv outside the clone, reused).
slipway_start_s3() {
  local port=${SLIPWAY_S3_PORT:-5002} venv=${SLIPWAY_MOTO_VENV:-/var/cache/slipway/moto-venv}
  export SLIPWAY_TEST_S3_ENDPOINT="http://127.0.0.1:$port" SLIPWAY_TEST_S3_BUCKET=slipway-test
  export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-test} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-test}
  export AWS_REGION=${AWS_REGION:-us-east-1}
  if ! curl -fsS "http://127.0.0.1:$port/moto-api/" >/dev/null 2>&1; then
    if [ ! -x "$venv/bin/moto_server" ]; then
      slipway_say "installing moto[server] into $venv"
      mkdir -p "$(dirname "$venv")"
      { python3 -m venv "$venv" && "$venv/bin/pip" install -q 'moto[server]'; } >"$SLIPWAY_LOGS/moto-install.log" 2>&1 \
        || slipway_die "installing moto failed (log: $SLIPWAY_LOGS/moto-install.log)"
    fi
    "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$SLIPWAY_LOGS/moto.log" 2>&1 &
    SLIPWAY_STARTED_PIDS+=("$!")
    slipway_wait_for "S3 (moto)" 60 "$SLIPWAY_LOGS/moto.log" curl -fsS "http://127.0.0.1:$port/moto-api/"
  else
    slipway_say "S3 (moto) already answers on $port; reusing it"
  fi
  curl -fsS -X PUT "http://127.0.0.1:$port/$SLIPWAY_TEST_S3_BUCKET" >/dev/null 2>&1 || true
}

# The offline function base image: Debian's static busybox in an otherwise empty image, in the
# engine (slipway/busybox:1) and in the registry (127.0.0.1:5000/slipway/busybox:1).
slipway_make_base_image() {
  local docker=(/usr/bin/docker -H "$SLIPWAY_DOCKER_HOST") image=slipway/busybox:1
  if ! "${docker[@]}" image inspect "$image" >/dev/null 2>&1; then
    local rootfs
    rootfs=$(mktemp -d)
    mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/www"
    cp /bin/busybox "$rootfs/bin/busybox"
    for applet in sh echo cat env printf httpd ls sleep; do ln -s busybox "$rootfs/bin/$applet"; done
    tar -C "$rootfs" -c . | "${docker[@]}" import - "$image" >/dev/null \
      || slipway_die "importing the base image failed"
    rm -rf "$rootfs"
    slipway_say "built base image $image"
  fi
  local remote=$SLIPWAY_REGISTRY/$image
  if ! curl -fs -o /dev/null "http://$SLIPWAY_REGISTRY/v2/slipway/busybox/manifests/1"; then
    "${docker[@]}" tag "$image" "$remote"
    "${docker[@]}" push "$remote" >"$SLIPWAY_LOGS/base-push.log" 2>&1 \
      || slipway_die "pushing the base image failed (log: $SLIPWAY_LOGS/base-push.log)"
  fi
}

# Stops what this invocation started (not what it reused).
slipway_stop_started() {
  local entry
  for entry in "${SLIPWAY_STARTED_PIDS[@]}"; do
    case $entry in
      postgres:*) su postgres -c "$PG_BIN/pg_ctl -D '${entry#postgres:}' -m fast stop" >/dev/null 2>&1 || true ;;
      *) kill "$entry" 2>/dev/null || true ;;
    esac
  done
  SLIPWAY_STARTED_PIDS=()
}

# Writes the exported variables so another shell can reuse the running services.
slipway_write_services_env() {
  {
    echo "DATABASE_URL=$DATABASE_URL"
    echo "SLIPWAY_DOCKER_HOST=$SLIPWAY_DOCKER_HOST"
    echo "SLIPWAY_REGISTRY=$SLIPWAY_REGISTRY"
    [ -n "${SLIPWAY_TEST_S3_ENDPOINT:-}" ] && echo "SLIPWAY_TEST_S3_ENDPOINT=$SLIPWAY_TEST_S3_ENDPOINT"
    [ -n "${SLIPWAY_TEST_S3_BUCKET:-}" ] && echo "SLIPWAY_TEST_S3_BUCKET=$SLIPWAY_TEST_S3_BUCKET"
    [ -n "${SLIPWAY_TEST_S3_ENDPOINT:-}" ] && printf 'AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\nAWS_REGION=%s\n' \
      "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" "$AWS_REGION"
  } >"$SLIPWAY_STATE_DIR/services.env"
}
