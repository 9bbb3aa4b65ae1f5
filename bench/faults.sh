#!/usr/bin/env bash
# A fault campaign on the embedded stack, run as separate processes: one api, one scheduler and
# SLIPWAY_FAULT_WORKERS workers, on a Postgres cluster of the campaign's own (so restarting it
# disturbs nothing else), against the real engine, BuildKit and registry. It prints one table.
#
#   - kill -9: rounds of concurrent deploys of several functions (a new version of each); during
#     each round, two random workers are killed at random points and started again, until
#     SLIPWAY_FAULT_KILLS kills are done;
#   - Postgres: the cluster restarted in the middle of a round of deploys and invocations;
#   - registry (SLIPWAY_FAULT_REGISTRY=1, the default): the registry stopped in the middle of a
#     round and started again 3 s later;
#   - engine (SLIPWAY_FAULT_ENGINE=1, the default): the runtime's dockerd, and with it the
#     BuildKit embedded in it, frozen (SIGSTOP) for 10 s in the middle of a round's builds, then
#     let go (SIGCONT). Builds and engine calls hang rather than fail. A restart proper is not
#     in the campaign: the Docker runtime's instances do not outlive their engine.
# Invocations of every function run beside all of it.
#
# For each fault it counts deployments lost (not settled within SLIPWAY_FAULT_SETTLE seconds),
# functions stuck `building` with nothing in flight, deployments the reaper failed (worker_lost,
# timed_out: a killed run is re-delivered and must finish the deployment itself), duplicated versions (a version twice, or two
# active deployments), orphaned instances (a container of a campaign function that no deployment
# records, or a second one serving), events lost (a 2xx invocation whose event id never reached
# the database) and the time to recover (the fault's end → the round settled and an invocation
# answered). Deployments that failed are counted too, with their reasons below the table; they
# are not errors of the campaign as long as they say why. The exit status is 1 if any count that
# must be 0 is not.
#
#   bench/faults.sh                                   # 100 kills, Postgres, registry, engine
#   SLIPWAY_FAULT_KILLS=10 SLIPWAY_FAULT_REGISTRY=0 SLIPWAY_FAULT_ENGINE=0 bench/faults.sh  # CI's
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

kills=${SLIPWAY_FAULT_KILLS:-100}
functions=${SLIPWAY_FAULT_FUNCTIONS:-4}
workers=${SLIPWAY_FAULT_WORKERS:-2}
with_registry=${SLIPWAY_FAULT_REGISTRY:-1}
with_engine=${SLIPWAY_FAULT_ENGINE:-1}
settle_bound=${SLIPWAY_FAULT_SETTLE:-300}
profile=${SLIPWAY_BENCH_PROFILE:-dev}

say() { printf '[faults] %s\n' "$*" >&2; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

cargo build -q --profile "$profile" -p slipway -p slipway-api -p slipway-worker -p slipway-scheduler
bin=$CARGO_TARGET_DIR/$([ "$profile" = dev ] && echo debug || echo "$profile")

work=$(mktemp -d /tmp/slipway-faults.XXXXXX)
chmod 755 "$work"
pg_bin=/usr/lib/postgresql/15/bin
pg_data=$work/pg
api_pid='' scheduler_pid='' invoker_pid=''
declare -a worker_pids=()
cleanup() {
  set +e
  [ -n "$invoker_pid" ] && kill "$invoker_pid" 2>/dev/null
  for pid in $api_pid $scheduler_pid "${worker_pids[@]}"; do
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  # Whatever the campaign's functions left in the engine goes with it.
  if [ -s "$work/function-ids" ]; then
    while read -r function_id; do
      for container in $(docker_cli ps -aq --filter "label=dev.slipway.function=$function_id"); do
        docker_cli rm -f "$container" >/dev/null
      done
      docker_cli network rm "slipway-fn-${function_id//-/}" >/dev/null 2>&1
    done <"$work/function-ids"
  fi
  [ -d "$pg_data" ] && runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_data" -m immediate stop >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
docker_cli() { docker --config "$SLIPWAY_DOCKER_CONFIG" -H "$SLIPWAY_DOCKER_HOST" "$@"; }

# --- A Postgres of the campaign's own -------------------------------------------------------
pg_port=$((30000 + RANDOM % 20000))
mkdir -p "$pg_data" "$work/pg-socket" "$work/pg-log"
chown postgres "$pg_data" "$work/pg-socket" "$work/pg-log"
runuser -u postgres -- "$pg_bin/initdb" -D "$pg_data" -A trust -U postgres >/dev/null
pg_options="-p $pg_port -c listen_addresses=127.0.0.1 -k $work/pg-socket -c fsync=off -c max_connections=300"
pg_start() { runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_data" -o "$pg_options" -l "$work/pg-log/postgres.log" -w start >/dev/null; }
pg_start
psql -q "postgres://postgres@127.0.0.1:$pg_port/postgres" -c "CREATE DATABASE slipway"
export DATABASE_URL=postgres://postgres@127.0.0.1:$pg_port/slipway
# On standard input: the id lists below outgrow what a command line may carry.
sql() { psql -qtA -v ON_ERROR_STOP=1 "$DATABASE_URL" <<<"$1"; }

# --- Slipway's processes ---------------------------------------------------------------------
SLIPWAY_SECRETS_KEY=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
api_port=$((20000 + RANDOM % 10000))
export SLIPWAY_SECRETS_KEY SLIPWAY_BUILDKIT=docker RUST_LOG=${RUST_LOG:-warn}
export SLIPWAY_ARCHIVE_STORE=file://$work/archives SLIPWAY_BIND=127.0.0.1:$api_port
export SLIPWAY_URL=http://127.0.0.1:$api_port
base_image=${SLIPWAY_BASE_IMAGE:-slipway/busybox:1}
export SLIPWAY_BUILD_BASE_IMAGES=$base_image,$SLIPWAY_REGISTRY/$base_image
# A silent worker's jobs run again after ~3 s; the reaper looks every 5 s at what is older than
# 30 s, so a campaign of minutes sees every sweep at work.
export SLIPWAY_WORKER_HEARTBEAT=1s SLIPWAY_WORKER_MISSED_HEARTBEATS=3
export SLIPWAY_CRON_REAP='*/5 * * * * *' SLIPWAY_REAP_AFTER=30s
export SLIPWAY_MAX_QUEUED_BUILDS=1000 SLIPWAY_RETRY_BASE=500ms
# A solve whose client was killed can leave BuildKit silent on the next one: cancelled and
# retried after this long without progress (hello's build reports progress within a second).
export SLIPWAY_BUILD_STALL_TIMEOUT=30s
mkdir -p "$work/archives" "$work/logs"
"$bin/slipway" migrate >/dev/null
eval "$("$bin/slipway" create-key faults)"
export SLIPWAY_API_KEY SLIPWAY_KEY_ID SLIPWAY_SIGNING_SECRET

start_api() {
  "$bin/slipway-api" >>"$work/logs/api.log" 2>&1 &
  api_pid=$!
}
start_worker() { # index
  SLIPWAY_WORKER_NAME=faults-$1-$RANDOM "$bin/slipway-worker" >>"$work/logs/worker-$1.log" 2>&1 &
  worker_pids[$1]=$!
}
start_api
"$bin/slipway-scheduler" >>"$work/logs/scheduler.log" 2>&1 &
scheduler_pid=$!
for i in $(seq 0 $((workers - 1))); do start_worker "$i"; done
until curl -fsS "$SLIPWAY_URL/healthz" >/dev/null 2>&1; do sleep 0.2; done

# --- Functions and what runs beside the faults -----------------------------------------------
for i in $(seq "$functions"); do
  "$bin/slipway" init "fault-$i" >/dev/null
  sql "SELECT id FROM functions WHERE name = 'fault-$i'" >>"$work/function-ids"
  cp -r examples/hello "$work/src-$i"
done
version_counter=0
deploy_all() { # → deployment ids appended to $work/round
  : >"$work/round"
  version_counter=$((version_counter + 1))
  local i deploys=()
  for i in $(seq "$functions"); do
    printf 'fault-%s v%s\n' "$i" "$version_counter" >"$work/src-$i/www/index.html"
    ("$bin/slipway" deploy "$work/src-$i" --function "fault-$i" 2>&1 \
      | sed -n 's/.*deployment \([0-9a-f-]*\).*/\1/p' >>"$work/round") &
    deploys+=($!)
  done
  # Only the uploads: a bare `wait` would wait for Slipway's own processes too. An upload the
  # api refused made no deployment, and the campaign counts deployments: it goes on.
  wait "${deploys[@]}" || say "an upload of round $version_counter was refused"
  cat "$work/round" >>"$work/deployments"
}
in_flight() { # deployment ids file → how many of them are still on their way
  local ids
  ids=$(sed "s/.*/'&'/" "$1" | paste -sd, -)
  [ -n "$ids" ] || { echo 0; return; }
  sql "SELECT count(*) FROM deployments WHERE id IN ($ids)
         AND status IN ('fetching', 'building', 'pushing', 'deploying')"
}
invoke_once() { # → 0 if some function answered 200
  local function_id
  function_id=$(head -1 "$work/function-ids")
  [ "$(curl -s -o /dev/null -w '%{http_code}' -m 5 -H "Authorization: Bearer $SLIPWAY_API_KEY" \
    "$SLIPWAY_URL/api/v1/functions/invoke/$function_id/")" = 200 ]
}
# Settles the round: returns once nothing of it is in flight and an invocation answers, or after
# the bound. Prints the seconds since $1 (ms).
settle_round() { # since_ms
  local deadline=$((SECONDS + settle_bound))
  while [ "$(in_flight "$work/round")" != 0 ] || ! invoke_once; do
    [ $SECONDS -lt $deadline ] || break
    sleep 0.2
  done
  awk -v ms=$(($(now_ms) - $1)) 'BEGIN { printf "%.1f", ms / 1000 }'
}
# Invokes every function, all the time, keeping the event id of each 2xx answer.
invoker() {
  while :; do
    while read -r function_id; do
      curl -s -o /dev/null -D - -m 5 -H "Authorization: Bearer $SLIPWAY_API_KEY" \
        "$SLIPWAY_URL/api/v1/functions/invoke/$function_id/" 2>/dev/null \
        | awk 'NR == 1 { ok = ($2 ~ /^2/) } tolower($1) == "x-slipway-event-id:" && ok { print $2 }' \
        | tr -d '\r' >>"$work/event-ids"
    done <"$work/function-ids"
    sleep 0.05
  done
}

# First versions, before any fault, so invocations have something to reach.
: >"$work/deployments"
deploy_all
settle_round "$(now_ms)" >/dev/null
: >"$work/event-ids"
invoker &
invoker_pid=$!

# --- The faults -----------------------------------------------------------------------------
declare -A recoveries=() rounds_of=() faults_of=() first_deployment_line=()
record_round() { # fault recovery
  recoveries[$1]="${recoveries[$1]:-} $2"
  rounds_of[$1]=$((${rounds_of[$1]:-0} + 1))
}
start_fault() { # fault
  [ -n "${first_deployment_line[$1]:-}" ] || first_deployment_line[$1]=$(($(wc -l <"$work/deployments") + 1))
}

say "kill -9: $kills kills of $workers workers over rounds of $functions concurrent deploys"
start_fault kill
done_kills=0
while [ "$done_kills" -lt "$kills" ]; do
  deploy_all
  for _ in 1 2; do
    [ "$done_kills" -lt "$kills" ] || break
    sleep "$(awk -v r=$RANDOM 'BEGIN { printf "%.2f", 0.2 + (r % 300) / 100 }')"
    victim=$((RANDOM % workers))
    kill -9 "${worker_pids[$victim]}" 2>/dev/null || true
    wait "${worker_pids[$victim]}" 2>/dev/null || true
    start_worker "$victim"
    done_kills=$((done_kills + 1))
    faults_of[kill]=$done_kills
    restarted=$(now_ms)
  done
  record_round kill "$(settle_round "$restarted")"
  say "kill -9: $done_kills/$kills"
done
last_kill_line=$(wc -l <"$work/deployments")

say "Postgres: restarted during deploys and invocations"
start_fault postgres
deploy_all
sleep 1
runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_data" -m fast -w stop >/dev/null
sleep 2
pg_start
faults_of[postgres]=1
record_round postgres "$(settle_round "$(now_ms)")"
last_postgres_line=$(wc -l <"$work/deployments")

if [ "$with_registry" = 1 ]; then
  say "registry: stopped for 3 s during deploys"
  start_fault registry
  registry_config=$SLIPWAY_STATE_DIR/registry/config.yml
  deploy_all
  sleep 1
  pkill -f "docker-registry serve $registry_config" || true
  sleep 3
  # Not a child of this script: the registry outlives the campaign, as it was before.
  (setsid docker-registry serve "$registry_config" </dev/null >>"$SLIPWAY_STATE_DIR/logs/registry.log" 2>&1 &)
  until curl -fsS -m 2 -u "$SLIPWAY_REGISTRY_USERNAME:$SLIPWAY_REGISTRY_PASSWORD" \
    "http://$SLIPWAY_REGISTRY/v2/" >/dev/null 2>&1; do sleep 0.2; done
  faults_of[registry]=1
  record_round registry "$(settle_round "$(now_ms)")"
fi
last_registry_line=$(wc -l <"$work/deployments")

if [ "$with_engine" = 1 ]; then
  say "engine and its BuildKit: frozen for 10 s during builds"
  start_fault engine
  dockerd_pid=$(cat "$SLIPWAY_STATE_DIR/docker/docker.pid")
  deploy_all
  sleep 1
  kill -STOP "$dockerd_pid"
  sleep 10
  kill -CONT "$dockerd_pid"
  faults_of[engine]=1
  record_round engine "$(settle_round "$(now_ms)")"
fi

# The reaper and the orphan sweep get their turn (SLIPWAY_REAP_AFTER plus a tick), and the
# invocations' last events their flush.
sleep 40
kill "$invoker_pid" 2>/dev/null || true
wait "$invoker_pid" 2>/dev/null || true
invoker_pid=
sleep 3

# --- The counts -----------------------------------------------------------------------------
ids_between() { sed -n "$1,$2p" "$work/deployments" | sed "s/.*/'&'/" | paste -sd, -; }
count_of() { # fault first_line last_line → "deployments failed lost"
  local ids
  ids=$(ids_between "$2" "$3")
  sql "SELECT count(*),
              count(*) FILTER (WHERE status = 'failed'),
              count(*) FILTER (WHERE status IN ('fetching', 'building', 'pushing', 'deploying'))
       FROM deployments WHERE id IN ($ids)" | tr '|' ' '
}
function_ids=$(sed "s/.*/'&'/" "$work/function-ids" | paste -sd, -)
stuck=$(sql "SELECT count(*) FROM functions f WHERE id IN ($function_ids) AND status = 'building'
               AND NOT EXISTS (SELECT 1 FROM deployments d WHERE d.function_id = f.id
                               AND d.status IN ('fetching', 'building', 'pushing', 'deploying'))")
duplicated=$(sql "SELECT (SELECT count(*) FROM (SELECT 1 FROM deployments WHERE function_id IN ($function_ids)
                                                 GROUP BY function_id, version HAVING count(*) > 1) v)
                       + (SELECT count(*) FROM (SELECT 1 FROM deployments WHERE function_id IN ($function_ids)
                                                 AND is_active GROUP BY function_id HAVING count(*) > 1) a)")
# The reaper failing a deployment is a giving-up: every run a kill interrupted is re-delivered
# by the queue and must finish the deployment itself.
given_up=$(sql "SELECT count(*) FROM deployments WHERE function_id IN ($function_ids)
                  AND status = 'failed' AND (error LIKE 'worker_lost%' OR error LIKE 'timed_out%')")
orphans=0
while read -r function_id; do
  for container in $(docker_cli ps -aq --no-trunc --filter "label=dev.slipway.function=$function_id"); do
    recorded=$(sql "SELECT count(*) FROM deployments WHERE container_id = '$container' AND is_active")
    [ "$recorded" = 1 ] || orphans=$((orphans + 1))
  done
done <"$work/function-ids"
sort -u "$work/event-ids" | grep . >"$work/answered" || true
answered=$(wc -l <"$work/answered")
# Thousands of ids: through COPY, not on a command line.
events_lost=$(psql -qtA "$DATABASE_URL" <<SQL
CREATE TEMP TABLE answered (id uuid);
\copy answered FROM '$work/answered'
SELECT count(*) FROM answered a WHERE NOT EXISTS (SELECT 1 FROM invocation_events e WHERE e.id = a.id);
SQL
)

median_max() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{ v[NR] = $1 } END { printf "%s s / %s s", v[int((NR + 1) / 2)], v[NR] }'; }
last_line=$(wc -l <"$work/deployments")
declare -A last_of=([kill]=$last_kill_line [postgres]=$last_postgres_line [registry]=$last_registry_line
  [engine]=$last_line)
bad=$((stuck + given_up + duplicated + orphans + events_lost))
printf '\n| fault | faults | deployments | failed | lost | recovery (median / max) |\n'
printf '| --- | --- | --- | --- | --- | --- |\n'
for fault in kill postgres registry engine; do
  [ -n "${faults_of[$fault]:-}" ] || continue
  read -r total failed lost < <(count_of "$fault" "${first_deployment_line[$fault]}" "${last_of[$fault]}")
  bad=$((bad + lost))
  case $fault in
    kill) label="kill -9 of a worker" ;;
    engine) label="engine + BuildKit frozen 10 s" ;;
    *) label="$fault restarted" ;;
  esac
  printf '| %s | %s | %s | %s | %s | %s |\n' "$label" "${faults_of[$fault]}" "$total" "$failed" "$lost" \
    "$(median_max "${recoveries[$fault]}")"
done
printf '\nacross the campaign: stuck functions %s, deployments the reaper gave up on %s, ' "$stuck" "$given_up"
printf 'duplicated versions %s, orphaned instances %s, ' "$duplicated" "$orphans"
printf 'events lost %s of %s answered invocations\n' "$events_lost" "$answered"
failures=$(sql "SELECT count(*) || ' × ' || left(error, 120) FROM deployments
                WHERE function_id IN ($function_ids) AND status = 'failed' GROUP BY left(error, 120)")
[ -z "$failures" ] || printf '\nfailed deployments, by reason:\n%s\n' "$failures"
[ "$bad" = 0 ] || { say "counts that must be 0 are not (logs: kept in $work.logs)"; cp -r "$work/logs" "$work.logs"; exit 1; }
