#!/usr/bin/env bash
# Builds the sandbox base image offline: debootstrap a minimal Debian bookworm
# from the Debian archive, add the unprivileged `agent` user, `docker import` it.
# No registry pull. Idempotent: an image built from this same recipe is reused.
set -euo pipefail

IMAGE="${1:-factory-sandbox:latest}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES="python3,python3-pytest,python3-coverage,python3-venv,nodejs,git,ca-certificates,procps,tinyproxy"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RECIPE="$( (cat "${BASH_SOURCE[0]}"; echo "$PACKAGES") | sha256sum | cut -c1-16)"

if docker image inspect "$IMAGE" --format '{{ index .Config.Labels "factory.recipe" }}' 2>/dev/null | grep -qx "$RECIPE"; then
    echo "sandbox image $IMAGE is up to date (recipe $RECIPE)"
    exit 0
fi

command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 1; }
ROOTFS="$(mktemp -d /var/tmp/factory-rootfs.XXXXXX)"
trap 'rm -rf "$ROOTFS"' EXIT
echo "building sandbox image $IMAGE with debootstrap (about a minute)..."
debootstrap --variant=minbase --include="$PACKAGES" bookworm "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 || {
    tail -n 20 "$ROOTFS.log" >&2; echo "debootstrap failed (log above)" >&2; exit 1; }
rm -f "$ROOTFS.log"
chroot "$ROOTFS" useradd --create-home --uid 1000 --user-group --shell /bin/bash agent
mkdir -p "$ROOTFS/workspace" "$ROOTFS/out" "$ROOTFS/inbox"
chown 1000:1000 "$ROOTFS/workspace" "$ROOTFS/out"
# Nothing in the image needs these; smaller image, faster start.
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/*
tar --numeric-owner -C "$ROOTFS" -c . | docker import \
    --change 'USER agent' \
    --change 'WORKDIR /workspace' \
    --change 'ENV HOME=/home/agent LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "LABEL factory.recipe=$RECIPE" \
    --change 'CMD ["sleep", "infinity"]' \
    - "$IMAGE" >/dev/null
echo "built sandbox image $IMAGE (recipe $RECIPE)"
