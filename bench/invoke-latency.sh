#!/usr/bin/env bash
# Slipway's invocation proxy against nginx as a reverse proxy, on the same function, with wrk:
# direct to the container / through nginx / through Slipway (events recorded), alternating, in
# one run, at 1 and at 8 keep-alive connections; prints medians and Slipway's ratios to nginx.
# Release build by default (benchmarks measure what ships).
#
#   bench/invoke-latency.sh
#   SLIPWAY_BENCH_ROUNDS=5 SLIPWAY_BENCH_SECONDS=10 bench/invoke-latency.sh
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
# shellcheck source=scripts/lib/services.sh
source scripts/lib/services.sh
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || missing+=(nginx)
if ((${#missing[@]})); then
  slipway_apt_install "${missing[@]}"
  # Debian's package starts its own nginx on port 80 when installed; this benchmark runs one of
  # its own and leaves nothing listening behind it.
  if [[ " ${missing[*]} " == *" nginx "* ]]; then service nginx stop >/dev/null 2>&1 || true; fi
fi
SLIPWAY_BENCH_PROFILE=${SLIPWAY_BENCH_PROFILE:-release} bench_example invoke_latency
