# shellcheck shell=bash
# The runtime base images of functions made from handler code (templates/node, templates/python):
# Debian bookworm minbases with Debian's own interpreter, made offline. Sourced after
# scripts/lib/services.sh (it uses that file's helpers and $SLIPWAY_REGISTRY); safe under
# `set -euo pipefail`.
#
#   slipway/node:1    minbase + nodejs (Debian's Node.js 18)
#   slipway/python:1  minbase + python3 (python3-minimal alone lacks http.server, json and
#                     socketserver: Debian ships them in libpython3.11-stdlib)
#
# Each is in the engine as slipway/<name>:1 and in the registry as
# $SLIPWAY_REGISTRY/slipway/<name>:1. The only network source is Debian's package mirror: the
# rootfs is debootstrapped once and kept as a tarball, so later engines (or a wiped one) import
# it without the network.
#
# Knobs (all optional):
#   SLIPWAY_RUNTIME_CACHE  where the rootfs tarballs are kept (/var/cache/slipway/runtimes)
#   SLIPWAY_DEBIAN_MIRROR  the Debian mirror debootstrap reads (http://deb.debian.org/debian)

SLIPWAY_RUNTIME_SUITE=bookworm
# Part of the tarball's name: bump it when the recipe below changes what ends up in a rootfs,
# so caches and engines holding the old one are remade rather than trusted.
SLIPWAY_RUNTIME_RECIPE=1
# The unprivileged user of the templates' Dockerfiles (USER 10001:10001): present in
# /etc/passwd so that tools resolving the uid (Python's getpass, Node's os.userInfo) work.
SLIPWAY_RUNTIME_UID=10001
SLIPWAY_RUNTIME_LABEL=org.slipway.runtime.rootfs

# Sets SLIPWAY_RUNTIME_TAR to the cached rootfs tarball of runtime $1 with Debian packages $2
# (comma-separated, as debootstrap's --include), debootstrapping it first if it is missing.
# $3 is a command run in the new rootfs (chroot) that must succeed before it is cached.
# Sets SLIPWAY_RUNTIME_DEBOOTSTRAPPED=1 when it made the tarball.
slipway_runtime_rootfs() { # name packages probe log
  local name=$1 packages=$2 probe=$3 log=$4
  local cache=${SLIPWAY_RUNTIME_CACHE:-/var/cache/slipway/runtimes}
  local mirror=${SLIPWAY_DEBIAN_MIRROR:-http://deb.debian.org/debian}
  local key tar rootfs t0
  key=$(printf '%s minbase %s recipe=%s\n' "$SLIPWAY_RUNTIME_SUITE" "$packages" "$SLIPWAY_RUNTIME_RECIPE" \
    | sha256sum | cut -c1-12)
  tar=$cache/$name-$SLIPWAY_RUNTIME_SUITE-minbase-$key.tar
  SLIPWAY_RUNTIME_TAR=$tar
  SLIPWAY_RUNTIME_DEBOOTSTRAPPED=0
  [ -s "$tar" ] && return 0

  slipway_need_root "debootstrapping the $name runtime"
  command -v debootstrap >/dev/null 2>&1 || slipway_apt_install debootstrap
  mkdir -p "$cache"
  t0=$(slipway_now_ms)
  # On the cache's filesystem, like the tarball: the rename below stays atomic.
  rootfs=$(mktemp -d "$cache/rootfs-$name.XXXXXX")
  # mktemp makes it 0700, and the tarball keeps the mode of its `.`: the image's / must let the
  # unprivileged user in.
  chmod 0755 "$rootfs"
  slipway_say "runtime $name: debootstrap $SLIPWAY_RUNTIME_SUITE (minbase, $packages) from $mirror"
  if ! debootstrap --variant=minbase --include="$packages" "$SLIPWAY_RUNTIME_SUITE" "$rootfs" "$mirror" >>"$log" 2>&1; then
    rm -rf "$rootfs"
    slipway_fail "runtime $name" "$log" "debootstrap failed"
  fi
  # Proof before caching: a tarball in the cache is trusted by every later run.
  if ! chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin sh -c "$probe" >>"$log" 2>&1; then
    rm -rf "$rootfs"
    slipway_fail "runtime $name" "$log" "the fresh rootfs fails its probe: $probe"
  fi
  # What an image never needs: package caches and indexes, documentation, translations, logs
  # of the bootstrap, dpkg/debconf backups.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
    "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* "$rootfs"/usr/share/lintian \
    "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* "$rootfs"/var/cache/debconf/*-old \
    "$rootfs"/var/lib/dpkg/*-old
  # debootstrap copies the host's resolver and name in; the engine bind-mounts its own over
  # them, and the build host's have no business in an image.
  : >"$rootfs/etc/resolv.conf"
  : >"$rootfs/etc/hostname"
  echo "fn:x:$SLIPWAY_RUNTIME_UID:$SLIPWAY_RUNTIME_UID:function:/nonexistent:/usr/sbin/nologin" >>"$rootfs/etc/passwd"
  echo "fn:x:$SLIPWAY_RUNTIME_UID:" >>"$rootfs/etc/group"
  echo "fn:!:19000::::::" >>"$rootfs/etc/shadow"
  # Written whole, then renamed: an interrupted run never leaves a truncated rootfs behind, and
  # two clones making the same one at once each rename a complete file.
  if ! tar --numeric-owner -C "$rootfs" -cf "$tar.$$.partial" . 2>>"$log"; then
    rm -rf "$rootfs" "$tar.$$.partial"
    slipway_fail "runtime $name" "$log" "could not write $tar"
  fi
  mv "$tar.$$.partial" "$tar"
  rm -rf "$rootfs"
  SLIPWAY_RUNTIME_DEBOOTSTRAPPED=1
  slipway_say "runtime $name: rootfs made in $(slipway_since "$t0")s: $tar ($(du -h "$tar" | cut -f1))"
}

# slipway/<name>:1 in the engine (imported from the cached rootfs when the engine lacks it, or
# holds one made from another rootfs) and in the registry (pushed when it was just imported or
# the registry lacks it).
slipway_make_runtime_image() { # name packages probe cmd-json
  local name=$1 packages=$2 probe=$3 cmd=$4
  local image=slipway/$name:1 remote=$SLIPWAY_REGISTRY/slipway/$name:1
  local log=$SLIPWAY_LOGS/runtime-$name.log t0 how=reused imported=0 have
  t0=$(slipway_now_ms)
  # Only names the tarball (no debootstrap) unless it is missing.
  slipway_runtime_rootfs "$name" "$packages" "$probe" "$log"
  local want
  want=$(basename "$SLIPWAY_RUNTIME_TAR")
  printf '%s %s\n' "$(date -u +%FT%TZ)" "$want" >>"$log"
  have=$(slipway_docker image inspect -f "{{index .Config.Labels \"$SLIPWAY_RUNTIME_LABEL\"}}" "$image" 2>/dev/null) || have=
  if [ "$have" != "$want" ]; then
    how=built
    [ "$SLIPWAY_RUNTIME_DEBOOTSTRAPPED" = 1 ] && how="built (debootstrapped)"
    if ! slipway_docker import \
      -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      -c 'ENV LANG=C.UTF-8' \
      -c "CMD $cmd" \
      -c "LABEL $SLIPWAY_RUNTIME_LABEL=$want" \
      -m "Debian $SLIPWAY_RUNTIME_SUITE minbase + $packages, made by scripts/lib/runtimes.sh" \
      - "$image" <"$SLIPWAY_RUNTIME_TAR" >>"$log" 2>&1; then
      slipway_fail "runtime image $image" "$log" "docker import failed"
    fi
    # As the templates run it: unprivileged, no network.
    slipway_docker run --rm --network none --user "$SLIPWAY_RUNTIME_UID:$SLIPWAY_RUNTIME_UID" \
      "$image" sh -c "$probe" >>"$log" 2>&1 \
      || slipway_fail "runtime image $image" "$log" "$image fails its probe as uid $SLIPWAY_RUNTIME_UID: $probe"
    imported=1
  fi
  # Also when nothing else is done: the engine's embedded BuildKit (dockerd 20.10) resolves
  # `FROM $remote` from the engine's own store when it holds that name, and otherwise asks the
  # registry over HTTPS, which a plain-HTTP registry refuses, --insecure-registry or not.
  slipway_docker tag "$image" "$remote"
  if [ "$imported" = 1 ] || ! slipway_registry_has "slipway/$name" 1 2>/dev/null; then
    [ "$how" = reused ] && how=pushed
    slipway_docker push "$remote" >>"$log" 2>&1 \
      || slipway_fail "runtime image $image" "$log" "push to $remote failed"
    slipway_registry_has "slipway/$name" 1 \
      || slipway_fail "runtime image $image" "$log" "$remote is not in the registry after the push"
  fi
  slipway_note "runtime image $image" "$how" "$t0"
}

slipway_make_runtime_images() {
  slipway_make_runtime_image node nodejs \
    'node -e "require(\"node:http\"); process.stdout.write(process.version + \"\\n\")"' \
    '["node"]'
  slipway_make_runtime_image python python3 \
    'python3 -c "import http.server, json, importlib.util, urllib.parse, signal, threading, traceback, sys; print(sys.version)"' \
    '["python3"]'
}
