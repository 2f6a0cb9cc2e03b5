#!/usr/bin/env bash
# `make demo`: a local "server" container (systemd + its own Docker engine) on the test bed's
# network, the example app v1 pulled from the TLS registry and served on 127.0.0.1.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
state="${GREENLIGHT_TESTBED_STATE:-$repo/.testbed}"
port="${GREENLIGHT_DEMO_PORT:-8080}"
name=greenlight-demo
registry=registry.greenlight.test:5000
image=$registry/greenlight/todo:v1

source "$here/server-run.sh"

if [ "$(docker inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" != true ]; then
  docker rm -f "$name" >/dev/null 2>&1 || true
  if ss -ltn "sport = :$port" | grep -q LISTEN; then
    echo "demo: port 127.0.0.1:$port is in use; free it or run GREENLIGHT_DEMO_PORT=<port> make demo" >&2
    exit 1
  fi
  server_run "$name" greenlight/server-docker:bookworm -p "127.0.0.1:$port:80"
fi
server_wait_docker "$name"

docker exec "$name" mkdir -p "/etc/docker/certs.d/$registry"
docker cp "$state/ca/ca.crt" "$name:/etc/docker/certs.d/$registry/ca.crt"
docker exec -i "$name" docker login --username greenlight --password-stdin "$registry" \
  <"$state/registry-password" >/dev/null
docker exec "$name" docker pull -q "$image" >/dev/null
docker exec "$name" sh -c 'mkdir -p /srv/todo-data && chown 10001:10001 /srv/todo-data'
if [ -z "$(docker exec "$name" docker ps -q --filter name=^todo$)" ]; then
  docker exec "$name" docker rm -f todo >/dev/null 2>&1 || true
  docker exec "$name" docker run --rm -v /srv/todo-data:/data -e DJANGO_SECRET_KEY=demo-only \
    "$image" python manage.py migrate --noinput >/dev/null
  docker exec "$name" docker run -d --name todo --restart unless-stopped -p 80:8000 \
    -v /srv/todo-data:/data -e DJANGO_SECRET_KEY=demo-only -e DJANGO_ALLOWED_HOST=127.0.0.1 \
    "$image" >/dev/null
fi
for _ in $(seq 1 60); do
  curl -sf -o /dev/null "http://127.0.0.1:$port/health" && break
  sleep 0.5
done
curl -sf "http://127.0.0.1:$port/health" >/dev/null || { echo "demo: the app did not answer on 127.0.0.1:$port" >&2; exit 1; }
echo "demo: registry, server '$name' and app v1 are up."
echo "demo: open http://127.0.0.1:$port/  (health: http://127.0.0.1:$port/health; stop: make demo-down)"
