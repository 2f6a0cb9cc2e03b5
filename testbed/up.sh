#!/usr/bin/env bash
# Stand up the whole test bed; each step reuses what already exists, so a second run is fast.
#   base images debian:bookworm-slim and debian:trixie-slim → server images → registry (TLS + htpasswd) →
#   example app images built and pushed (v1, v2, bad-health, bad-migration) → accessory images
#   (postgres, redis from Debian packages) built and pushed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export GREENLIGHT_TESTBED_STATE="${GREENLIGHT_TESTBED_STATE:-$here/../.testbed}"
mkdir -p "$GREENLIGHT_TESTBED_STATE"
state=$(cd "$GREENLIGHT_TESTBED_STATE" && pwd)

bash "$here/host-preflight.sh"
bash "$here/base-image.sh" debian:bookworm-slim
bash "$here/base-image.sh" debian:trixie-slim

# Server images: rebuilt only when their Dockerfile changes (hash in a label).
#   greenlight/server:bookworm, greenlight/server-docker:bookworm  Debian 12, without/with Docker
#   greenlight/server:trixie                                        Debian 13, without Docker (the
#     docker_engine role installs trixie's docker.io 26); its dockerd gets the test-bed-only
#     DOCKER_ALLOW_IPV6_ON_IPV4_INTERFACE=1 (testbed/server/Dockerfile says why).
server_hash=$(sha256sum "$here/server/Dockerfile" | cut -c1-16)
for variant in server:bookworm:0 server-docker:bookworm:1 server:trixie:0; do
  IFS=: read -r name suite with_docker <<<"$variant"
  extra=()
  [ "$suite" = trixie ] && extra=(--build-arg DOCKERD_ENV=DOCKER_ALLOW_IPV6_ON_IPV4_INTERFACE=1)
  have=$(docker image inspect -f '{{ index .Config.Labels "greenlight.testbed.hash" }}' \
    "greenlight/$name:$suite" 2>/dev/null || true)
  if [ "$have" != "$server_hash" ]; then
    echo "testbed: building greenlight/$name:$suite"
    docker build -q --label "greenlight.testbed.hash=$server_hash" --build-arg "BASE=debian:$suite-slim" \
      --build-arg "WITH_DOCKER=$with_docker" "${extra[@]}" -t "greenlight/$name:$suite" "$here/server" >/dev/null
  fi
done

bash "$here/registry.sh"

# Example app images, then push them (and a plain base image) to the test registry.
bash "$here/build-app-images.sh"
bash "$here/build-accessory-images.sh"
export DOCKER_CONFIG="$state/docker-config"
mkdir -p "$DOCKER_CONFIG"
port="${GREENLIGHT_REGISTRY_PORT:-5443}"
docker login -u greenlight --password-stdin "127.0.0.1:$port" <"$state/registry-password" >/dev/null
push() {  # local-tag remote-path
  local remote="127.0.0.1:$port/$2"
  local want; want=$(docker image inspect -f '{{.Id}}' "$1")
  # Skip when the registry already has exactly this image (recorded after the last push).
  if [ -f "$state/pushed/$2" ] && [ "$(cat "$state/pushed/$2")" = "$want" ] \
     && printf 'user = "greenlight:%s"\n' "$(cat "$state/registry-password")" | \
        curl -sf -o /dev/null --cacert "$state/ca/ca.crt" -K - \
          --resolve "registry.greenlight.test:$port:127.0.0.1" \
          -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
          "https://registry.greenlight.test:$port/v2/${2%%:*}/manifests/${2##*:}"; then
    return 0
  fi
  docker tag "$1" "$remote"
  docker push -q "$remote" >/dev/null
  mkdir -p "$(dirname "$state/pushed/$2")"
  echo "$want" >"$state/pushed/$2"
}
push debian:bookworm-slim greenlight/debian:bookworm-slim
for v in v1 v2 bad-health bad-migration; do
  push "greenlight/todo:$v" "greenlight/todo:$v"
done
for a in postgres:15-bookworm redis:7-bookworm; do
  push "greenlight/$a" "greenlight/$a"
done
echo "testbed: ready (registry registry.greenlight.test:5000 on network greenlight-test, 127.0.0.1:$port from the host)"
