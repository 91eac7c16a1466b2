#!/usr/bin/env bash
# Builds the offline base image balancer-lab/base:bookworm for machines that cannot pull images
# (no registry access): a minimal Debian bookworm made with debootstrap, imported with
# `docker import`. The sandbox Dockerfiles then install nodejs / php-cli from Debian's mirror
# on top of it (apt-get works inside `docker build` where Docker Hub does not). Use it with
#   LAB_DOCKER_BASE=balancer-lab/base:bookworm
# (the lab's builder), or NODE_BASE / PHP_BASE for docker compose.
#
# Idempotent: does nothing when the image exists (--force rebuilds it). The root filesystem
# tarball is cached in $BALANCER_LAB_CACHE (default /var/cache/balancer-lab), so a rerun on a
# machine that lost its Docker images imports it again in seconds instead of bootstrapping.
#
# Needs: root (debootstrap), debootstrap, docker. Env: IMAGE (default balancer-lab/base:bookworm),
# SUITE (default bookworm), MIRROR (default http://deb.debian.org/debian), BALANCER_LAB_CACHE.
set -euo pipefail

IMAGE="${IMAGE:-balancer-lab/base:bookworm}"
SUITE="${SUITE:-bookworm}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
CACHE="${BALANCER_LAB_CACHE:-/var/cache/balancer-lab}"
TARBALL="$CACHE/rootfs-$SUITE-minbase.tar"
FORCE=0

say() { printf 'build-offline-base: %s\n' "$*"; }
die() { printf 'build-offline-base: %s\n' "$*" >&2; exit 1; }

for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) die "unknown argument '$arg' (only --force)." ;;
  esac
done

command -v docker >/dev/null || die "docker is not installed: install docker.io (Debian) or Docker Engine first."
docker info >/dev/null 2>&1 || die "Docker is not reachable: start it (e.g. 'dockerd &' as root) and run this again."

if [ "$FORCE" = 0 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  say "$IMAGE exists already; nothing to do (--force rebuilds it)."
  exit 0
fi

if [ "$FORCE" = 1 ] || [ ! -s "$TARBALL" ]; then
  [ "$(id -u)" = 0 ] || die "debootstrap needs root: run this as root (or with sudo)."
  command -v debootstrap >/dev/null || die "debootstrap is not installed: apt-get install -y debootstrap."
  mkdir -p "$CACHE"
  ROOTFS="$(mktemp -d "$CACHE/rootfs-$SUITE.XXXXXX")"
  trap 'rm -rf "$ROOTFS" "$TARBALL.tmp"' EXIT
  say "debootstrap --variant=minbase $SUITE from $MIRROR (about a minute)..."
  debootstrap --variant=minbase "$SUITE" "$ROOTFS" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || die "debootstrap failed; its log is $CACHE/debootstrap.log."
  # Images need no apt lists or caches: apt-get update runs in each Dockerfile.
  rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/archives/*.deb
  tar -C "$ROOTFS" -cf "$TARBALL.tmp" .
  mv "$TARBALL.tmp" "$TARBALL"
  rm -rf "$ROOTFS"
  trap - EXIT
  say "root filesystem cached in $TARBALL."
else
  say "using the cached root filesystem $TARBALL."
fi

say "docker import -> $IMAGE"
docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV DEBIAN_FRONTEND=noninteractive' \
  --change 'CMD ["bash"]' \
  --message "balancer-lab offline base: debootstrap --variant=minbase $SUITE" \
  "$TARBALL" "$IMAGE" >/dev/null
say "done: $IMAGE ($(docker image inspect --format '{{.Size}}' "$IMAGE") bytes). Use it with LAB_DOCKER_BASE=$IMAGE."
