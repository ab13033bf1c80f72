#!/usr/bin/env bash
# Make this machine able to build and run toolbus's container image without a Docker engine: Debian's
# podman, with runc as its runtime (crun fails on hybrid cgroups) and no default ulimits (the sandbox
# refuses to raise them), debootstrap for a locally made base image (no image registry is reachable).
# Idempotent; run as root. Used by .ci/run; by hand: sudo bash deploy/docker/setup-podman.sh
set -euo pipefail

missing=()
for tool in podman runc debootstrap; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup-podman: installing ${missing[*]} (and uidmap, slirp4netns, fuse-overlayfs)"
  (apt-get update -qq || true)
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap uidmap slirp4netns fuse-overlayfs >/dev/null
fi

conf=/etc/containers/containers.conf
if ! grep -q '^runtime *= *"runc"' "$conf" 2>/dev/null; then
  echo "setup-podman: writing $conf (runtime runc, no default ulimits)"
  mkdir -p /etc/containers
  cat > "$conf" <<'CONF'
# Written by toolbus's deploy/docker/setup-podman.sh.
[containers]
default_ulimits = []

[engine]
runtime = "runc"
CONF
fi
podman --version
