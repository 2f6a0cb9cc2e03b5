#!/usr/bin/env bash
# Build the accessory images the test bed uses in place of the official postgres and redis images
# (Docker Hub is out of reach): greenlight/postgres:15-bookworm from Debian's postgresql-15 and
# greenlight/redis:7-bookworm from Debian's redis-server, both FROM debian:bookworm-slim.
# Rebuilt only when testbed/accessories/<name>/ changes (hash in a label); a second run takes
# well under a second. Does not push: testbed/up.sh pushes them to the test registry, where
# servers pull them as registry.greenlight.test:5000/greenlight/<name>:<tag>.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-0}"
for spec in postgres:15-bookworm redis:7-bookworm; do
  name=${spec%%:*}; tag=${spec##*:}
  hash=$(cat "$here/accessories/$name"/* | sha256sum | cut -c1-16)
  have=$(docker image inspect -f '{{ index .Config.Labels "greenlight.testbed.hash" }}' \
    "greenlight/$spec" 2>/dev/null || true)
  [ "$have" = "$hash" ] && continue
  start=$(date +%s)
  echo "testbed: building greenlight/$spec"
  if ! out=$(docker build --label "greenlight.testbed.hash=$hash" -t "greenlight/$spec" \
      "$here/accessories/$name" 2>&1); then
    echo "$out" | tail -n 40 >&2
    echo "testbed: docker build of greenlight/$spec failed" >&2
    exit 1
  fi
  echo "testbed: built greenlight/$spec in $(( $(date +%s) - start ))s"
done
