#!/usr/bin/env bash
# The API's memory under concurrent uploads. Three runs of a release `slipway-api` under
# /usr/bin/time, each measured by its peak RSS: idle, one upload, then N uploads at once. Each
# upload is a real v2-signed `slipway deploy` of an M MiB archive of random bytes (incompressible,
# so M MiB also cross the wire and reach S3 (moto)). No worker runs: the builds stay queued.
#
#   bench/uploads.sh                 # N=6, M=45
#   SLIPWAY_BENCH_UPLOADS=8 SLIPWAY_BENCH_UPLOAD_MIB=20 bench/uploads.sh
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

uploads=${SLIPWAY_BENCH_UPLOADS:-6}
mib=${SLIPWAY_BENCH_UPLOAD_MIB:-45}
work=$(mktemp -d)
api_pid=
cleanup() {
  if [ -n "$api_pid" ]; then kill "$api_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

cargo build -q --release -p slipway-api -p slipway
bin=$CARGO_TARGET_DIR/release

# A database of its own, so the figures never depend on what other runs left.
database=slipway_bench_uploads
admin_url=${DATABASE_URL%/*}/postgres
psql -q "$admin_url" -c "DROP DATABASE IF EXISTS $database" -c "CREATE DATABASE $database"
export DATABASE_URL=${DATABASE_URL%/*}/$database
export SLIPWAY_SECRETS_KEY
SLIPWAY_SECRETS_KEY=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
export SLIPWAY_ARCHIVE_STORE=s3://$SLIPWAY_TEST_S3_BUCKET SLIPWAY_S3_ENDPOINT=$SLIPWAY_TEST_S3_ENDPOINT
export SLIPWAY_MAX_CONCURRENT_UPLOADS=$uploads RUST_LOG=warn
port=$((20000 + RANDOM % 10000))
export SLIPWAY_BIND=127.0.0.1:$port SLIPWAY_URL=http://127.0.0.1:$port
"$bin/slipway" migrate >/dev/null
eval "$("$bin/slipway" create-key bench-uploads)"
export SLIPWAY_API_KEY SLIPWAY_KEY_ID SLIPWAY_SIGNING_SECRET

# One archive per upload: a Dockerfile and M MiB of random bytes.
for i in $(seq "$uploads"); do
  mkdir -p "$work/src$i"
  printf 'FROM scratch\nCOPY blob /blob\n' >"$work/src$i/Dockerfile"
  head -c "$((mib * 1024 * 1024))" /dev/urandom >"$work/src$i/blob"
  tar -C "$work/src$i" -czf "$work/archive$i.tar.gz" Dockerfile blob
  rm -rf "${work:?}/src$i"
done

# Starts the api under /usr/bin/time, runs "$@", stops it and prints its peak RSS in KiB.
peak_rss_kib() {
  /usr/bin/time -f '%M' -o "$work/rss" "$bin/slipway-api" >"$work/api.log" 2>&1 &
  local timer=$!
  until curl -fsS "$SLIPWAY_URL/healthz" >/dev/null 2>&1; do sleep 0.1; done
  api_pid=$(pgrep -P "$timer")
  "$@"
  # The api itself: time(1) would die of the signal and leave it running.
  kill -TERM "$api_pid"
  wait "$timer" || true
  api_pid=
  cat "$work/rss"
}

deploy() { # i
  "$bin/slipway" init "bench-upload-$1" >/dev/null
  "$bin/slipway" deploy "$work/archive$1.tar.gz" --function "bench-upload-$1" >/dev/null
}
one_upload() { deploy 1; }
concurrent_uploads() {
  local pids=()
  for i in $(seq "$uploads"); do
    deploy "$i" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
}

idle=$(peak_rss_kib true)
one=$(peak_rss_kib one_upload)
psql -q "$DATABASE_URL" -c "TRUNCATE functions CASCADE"
many=$(peak_rss_kib concurrent_uploads)
stored=$(psql -tA "$DATABASE_URL" -c "SELECT count(*) FROM deployments")

mib_of() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
echo "api peak RSS, release build, $uploads × $mib MiB archives (all $stored deployments accepted):"
printf '| %-28s | %10s | %s |\n' run "peak RSS" "÷ one upload"
printf '| %-28s | %10s | %s |\n' idle "$(mib_of "$idle")" "$(awk -v a="$idle" -v b="$one" 'BEGIN { printf "%.2f×", a / b }')"
printf '| %-28s | %10s | %s |\n' "one upload" "$(mib_of "$one")" "1.00×"
printf '| %-28s | %10s | %s |\n' "$uploads concurrent uploads" "$(mib_of "$many")" "$(awk -v a="$many" -v b="$one" 'BEGIN { printf "%.2f×", a / b }')"
[ "$stored" -eq "$uploads" ] || { echo "only $stored of $uploads uploads were accepted" >&2; exit 1; }
