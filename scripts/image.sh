#!/usr/bin/env bash
# Slipway's own image, made offline: a Debian bookworm minbase (debootstrap from Debian's
# packages, never a registry on the internet) with git, the ssh client and CA certificates for
# the worker's git fetches, plus the release binaries `slipway`, `slipway-api`, `slipway-worker`
# and `slipway-scheduler` in /usr/local/bin. It runs as the unprivileged user `slipway` (10001);
# the worker, whose role is to drive Docker engines, is started as root by deploy/swarm/stack.yml.
#
#   scripts/image.sh                  build (or reuse) it in the dev engine; prints its reference
#   scripts/image.sh --push REPOSITORY
#                                     also push it as REPOSITORY:<tag> (host[:port]/path, e.g. an
#                                     ECR repository URL) and print that reference instead: what
#                                     a swarm's nodes pull. The login is the dev engine client's
#                                     (docker --config "$SLIPWAY_DOCKER_CONFIG" login …).
#
# The tag is the version plus a hash of the base and the binaries, so an unchanged build is
# reused, and a changed one never overwrites what a running stack pinned.
#
# Knobs (all optional):
#   SLIPWAY_IMAGE_CACHE    where the base rootfs tarball is kept (/var/cache/slipway/image)
#   SLIPWAY_DEBIAN_MIRROR  the Debian mirror debootstrap reads (http://deb.debian.org/debian)
#   CARGO_TARGET_DIR       as for cargo (/var/cache/slipway/target, shared with scripts/test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/services.sh
source scripts/lib/services.sh

push_to=
case "${1:-}" in
  "") ;;
  --push)
    push_to=${2:?--push needs a repository (host[:port]/path)}
    ;;
  *)
    echo "usage: scripts/image.sh [--push REPOSITORY]" >&2
    exit 2
    ;;
esac

image_cache=${SLIPWAY_IMAGE_CACHE:-/var/cache/slipway/image}
mirror=${SLIPWAY_DEBIAN_MIRROR:-http://deb.debian.org/debian}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/slipway/target}
export SQLX_OFFLINE=true
log=$SLIPWAY_LOGS/image.log
: >"$log"
binaries=(slipway slipway-api slipway-worker slipway-scheduler)
# What the worker runs besides its own code: git (fetches of bound repositories), its ssh
# transport, and the CAs for https remotes and registries.
packages=git,openssh-client,ca-certificates
uid=10001

[ -f "$SLIPWAY_STATE_DIR/services.env" ] \
  || slipway_die "no dev engine: start it first (scripts/dev.sh, or SLIPWAY_SERVICES_ONLY=1 scripts/test.sh)"
set -a
# shellcheck source=/dev/null
source "$SLIPWAY_STATE_DIR/services.env"
set +a
slipway_docker version >/dev/null 2>&1 \
  || slipway_die "the dev engine at $SLIPWAY_DOCKER_HOST does not answer: run scripts/dev.sh or SLIPWAY_SERVICES_ONLY=1 scripts/test.sh"

# --- the base: debootstrap once, kept as a tarball --------------------------------------------
mkdir -p "$image_cache"
base_tar=$image_cache/bookworm-minbase-$(echo "$packages" | sha256sum | cut -c1-12).tar
if [ ! -s "$base_tar" ]; then
  command -v debootstrap >/dev/null || slipway_apt_install debootstrap
  t0=$(slipway_now_ms)
  rootfs=$(mktemp -d "$image_cache/rootfs.XXXXXX")
  # mktemp makes it 0700, and the tarball keeps the mode of its `.`: the image's / must let the
  # unprivileged user in.
  chmod 0755 "$rootfs"
  slipway_say "debootstrap bookworm (minbase, $packages) from $mirror"
  if ! debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" "$mirror" >>"$log" 2>&1; then
    rm -rf "$rootfs"
    slipway_fail "image" "$log" "debootstrap failed"
  fi
  # What an image never needs: package caches and indexes, documentation, translations.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*.log
  # Written whole, then renamed: an interrupted run never leaves a truncated base behind.
  tar --numeric-owner -C "$rootfs" -cf "$base_tar.partial" .
  mv "$base_tar.partial" "$base_tar"
  rm -rf "$rootfs"
  slipway_say "base rootfs made in $(slipway_since "$t0")s: $base_tar"
fi

# --- the binaries -----------------------------------------------------------------------------
t0=$(slipway_now_ms)
packages_args=()
for bin in "${binaries[@]}"; do packages_args+=(-p "$bin"); done
slipway_say "cargo build --release ${packages_args[*]}"
cargo build --release --locked "${packages_args[@]}" >>"$log" 2>&1 \
  || slipway_fail "image" "$log" "cargo build --release failed"
slipway_say "release binaries built in $(slipway_since "$t0")s"
release=$CARGO_TARGET_DIR/release

version=$(cargo metadata --no-deps --format-version 1 --locked 2>>"$log" \
  | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "slipway"))')
content=$( (
  basename "$base_tar"
  for bin in "${binaries[@]}"; do sha256sum "$release/$bin" | cut -d' ' -f1; done
) | sha256sum | cut -c1-12)
tag=$version-$content
reference=slipway/slipway:$tag

# --- the image --------------------------------------------------------------------------------
if slipway_docker image inspect "$reference" >/dev/null 2>&1; then
  slipway_say "image $reference reused"
else
  t0=$(slipway_now_ms)
  rootfs=$(mktemp -d "${TMPDIR:-/tmp}/slipway-image.XXXXXX")
  trap 'rm -rf "$rootfs"' EXIT
  tar --numeric-owner -C "$rootfs" -xf "$base_tar"
  chmod 0755 "$rootfs"
  for bin in "${binaries[@]}"; do install -m 0755 "$release/$bin" "$rootfs/usr/local/bin/$bin"; done
  echo "slipway:x:$uid:$uid:Slipway:/home/slipway:/usr/sbin/nologin" >>"$rootfs/etc/passwd"
  echo "slipway:x:$uid:" >>"$rootfs/etc/group"
  echo "slipway:!:19000::::::" >>"$rootfs/etc/shadow"
  install -d -m 0750 -o "$uid" -g "$uid" "$rootfs/home/slipway"
  revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  tar --numeric-owner -C "$rootfs" -c . | slipway_docker import \
    -c "USER $uid:$uid" \
    -c 'WORKDIR /home/slipway' \
    -c 'ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/home/slipway' \
    -c 'CMD ["slipway", "--help"]' \
    -c "LABEL org.opencontainers.image.title=slipway org.opencontainers.image.version=$version org.opencontainers.image.revision=$revision" \
    -m "Slipway $version ($revision), made by scripts/image.sh" - "$reference" >>"$log" 2>&1 \
    || slipway_fail "image" "$log" "docker import failed"
  rm -rf "$rootfs"
  trap - EXIT
  slipway_say "image $reference made in $(slipway_since "$t0")s"
fi
# Proof that it runs, as the user it runs as.
said=$(slipway_docker run --rm --network none "$reference" slipway --version 2>>"$log") \
  || slipway_fail "image" "$log" "slipway --version fails in $reference"
slipway_say "$reference: $said (user $(slipway_docker image inspect -f '{{.Config.User}}' "$reference"))"

if [ -n "$push_to" ]; then
  remote=$push_to:$tag
  slipway_docker tag "$reference" "$remote"
  slipway_docker push "$remote" >>"$log" 2>&1 || slipway_fail "image" "$log" "push to $remote failed"
  echo "$remote"
else
  echo "$reference"
fi
