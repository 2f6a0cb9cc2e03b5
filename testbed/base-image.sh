#!/usr/bin/env bash
# Make sure the image tag debian:<suite>-slim (bookworm, Debian 12, by default; trixie, Debian 13)
# exists locally. Pulls it when a registry answers; otherwise builds an equivalent minimal root
# filesystem of that suite with debootstrap from this machine's own apt mirror and imports it.
set -euo pipefail
tag="${1:-debian:bookworm-slim}"
suite=${tag#*:}; suite=${suite%-slim}
case "$suite" in
  bookworm|trixie) ;;
  *) echo "testbed: base-image.sh builds debian:bookworm-slim or debian:trixie-slim, not $tag" >&2; exit 2 ;;
esac
state="${GREENLIGHT_TESTBED_STATE:-$(cd "$(dirname "$0")/.." && pwd)/.testbed}"

if docker image inspect "$tag" >/dev/null 2>&1; then
  exit 0
fi
if timeout 20 docker pull -q "$tag" >/dev/null 2>&1; then
  echo "testbed: pulled $tag"
  exit 0
fi

# The mirror comes from the machine's apt configuration (deb822 or one-line format),
# so nothing here names a host of its own.
mirror=$(
  { grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}';
    grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{print $2}'; } |
  grep -E '/debian/?$' | head -n 1 || true
)
if [ -z "$mirror" ]; then
  echo "testbed: no Debian mirror found in /etc/apt sources; cannot build $tag" >&2
  exit 1
fi
command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null

rootfs="$state/rootfs-$suite"
rm -rf "$rootfs"
mkdir -p "$state"
echo "testbed: building $tag with debootstrap from $mirror (about a minute)"
debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$state/debootstrap-$suite.log" 2>&1 || {
  echo "testbed: debootstrap failed, see $state/debootstrap-$suite.log" >&2; exit 1; }
# Same slimming the official image applies: no apt caches, no docs.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
  "$mirror" "$suite" "$suite" >"$rootfs/etc/apt/sources.list.d/debian.sources"
: >"$rootfs/etc/apt/sources.list"
tar -C "$rootfs" -c . | docker import -c 'CMD ["bash"]' - "$tag" >/dev/null
rm -rf "$rootfs"
echo "testbed: imported $tag"
