#!/usr/bin/env bash
# The pipeline client must not link the server (issue 13): `slipway` built without its `server`
# feature is what pipelines install, and each server crate that creeps back into its tree costs
# them build time and binary size, silently. This fails, naming the crate and the path it came
# in by, when one of the server's heavy crates is in the client's normal dependency tree, and
# when the client-only binary does not build.
set -euo pipefail
cd "$(dirname "$0")/.."

forbidden=(
  axum
  bollard
  bollard-buildkit-proto
  tonic
  aws-config
  aws-sdk-s3
  aws-sdk-ecr
  aws-smithy-runtime
  sqlx
  apalis
  apalis-postgres
)

tree=$(cargo tree -p slipway --no-default-features -e normal --prefix none --locked)
# "name vX.Y.Z (...)": the first field is the crate's name.
crates=$(awk '{ print $1 }' <<<"$tree" | sort -u)

offenders=()
for crate in "${forbidden[@]}"; do
  if grep -qxF -- "$crate" <<<"$crates"; then
    offenders+=("$crate")
  fi
done
if ((${#offenders[@]})); then
  for crate in "${offenders[@]}"; do
    echo "check-client-deps: the client (slipway --no-default-features) depends on $crate:" >&2
    cargo tree -p slipway --no-default-features -e normal --locked --invert "$crate" >&2 || true
  done
  exit 1
fi

cargo build -p slipway --no-default-features --locked
echo "check-client-deps: ok, the client's $(wc -l <<<"$crates") crates include none of: ${forbidden[*]}"
