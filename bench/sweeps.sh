#!/usr/bin/env bash
# Times one tick of each scheduler sweep over a million seeded functions, next to a baseline
# (a count over the same table) in the same run. Not a test: it prints figures. A debug build
# is enough: the time is spent in Postgres.
#
#   bench/sweeps.sh                          # 1,000,000 functions
#   SLIPWAY_BENCH_FUNCTIONS=100000 bench/sweeps.sh
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

admin=$DATABASE_URL
bench_db=slipway_bench_$$
bench_url=${admin%/*}/$bench_db
psql "$admin" -qc "CREATE DATABASE $bench_db"
trap 'psql "$admin" -qc "DROP DATABASE IF EXISTS $bench_db WITH (FORCE)"' EXIT

DATABASE_URL=$bench_url cargo run -q -p slipway -- migrate
DATABASE_URL=$bench_url cargo run -q -p slipway-scheduler --example sweep_bench
