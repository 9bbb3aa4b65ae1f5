#!/usr/bin/env bash
# Packs a function directory into the archive Slipway deploys: a gzipped tar with the
# Dockerfile at its root.   examples/pack.sh examples/hello /tmp/hello.tar.gz
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: $0 DIR OUT.tar.gz" >&2
  exit 2
fi
dir=$1 out=$2
[ -f "$dir/Dockerfile" ] || { echo "$0: $dir/Dockerfile not found" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
tar -C "$dir" --owner=0 --group=0 --numeric-owner -czf "$out" .
echo "$out"
