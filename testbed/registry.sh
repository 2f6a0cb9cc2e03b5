#!/usr/bin/env bash
# Start (or reuse) the test bed's private registry: TLS from a test CA made here, htpasswd
# auth, on the Docker network the test bed owns. Idempotent; prints nothing when all is up.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
state="${GREENLIGHT_TESTBED_STATE:-$here/../.testbed}"
network=greenlight-test
name=greenlight-registry
alias=registry.greenlight.test
host_port="${GREENLIGHT_REGISTRY_PORT:-5443}"
user=greenlight
mkdir -p "$state/ca" "$state/registry"
state=$(cd "$state" && pwd)

docker network inspect "$network" >/dev/null 2>&1 || docker network create "$network" >/dev/null

if ! docker image inspect greenlight/registry:bookworm >/dev/null 2>&1; then
  docker build -q -t greenlight/registry:bookworm "$here/registry" >/dev/null
fi

# Test CA and the registry's certificate, made once per machine (state dir).
if [ ! -s "$state/ca/ca.crt" ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=greenlight test CA" \
    -keyout "$state/ca/ca.key" -out "$state/ca/ca.crt" 2>/dev/null
fi
if [ ! -s "$state/registry/tls.crt" ]; then
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$alias" \
    -keyout "$state/registry/tls.key" -out "$state/registry/tls.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1\n' "$alias" >"$state/registry/ext.cnf"
  openssl x509 -req -in "$state/registry/tls.csr" -CA "$state/ca/ca.crt" -CAkey "$state/ca/ca.key" \
    -CAcreateserial -days 365 -extfile "$state/registry/ext.cnf" -out "$state/registry/tls.crt" 2>/dev/null
  chmod 0644 "$state/registry/tls.key"
fi
# The password is random per machine; htpasswd reads it from stdin, never argv.
if [ ! -s "$state/registry-password" ]; then
  (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$state/registry-password")
fi
if [ ! -s "$state/registry/htpasswd" ]; then
  docker run --rm -i greenlight/registry:bookworm htpasswd -niB "$user" \
    <"$state/registry-password" >"$state/registry/htpasswd"
fi
cp "$here/registry/config.yml" "$state/registry/config.yml"

# A registry started from another checkout (another .testbed: other CA and password) is replaced.
mounted=$(docker inspect -f '{{range .Mounts}}{{if eq .Destination "/etc/greenlight-registry"}}{{.Source}}{{end}}{{end}}' \
  "$name" 2>/dev/null || true)
if [ "$(docker inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" != "true" ] || [ "$mounted" != "$state/registry" ]; then
  docker rm -f "$name" >/dev/null 2>&1 || true
  if ss -ltn "sport = :$host_port" 2>/dev/null | grep -q LISTEN; then
    echo "testbed: port 127.0.0.1:$host_port is already in use; free it or set GREENLIGHT_REGISTRY_PORT" >&2
    exit 1
  fi
  docker run -d --name "$name" --restart unless-stopped \
    --network "$network" --network-alias "$alias" \
    -p "127.0.0.1:$host_port:5000" \
    -v "$state/registry:/etc/greenlight-registry:ro" \
    -v greenlight-registry-data:/var/lib/docker-registry \
    greenlight/registry:bookworm >/dev/null
fi
# Wait until it answers over TLS with the test CA (401 = up, auth required).
for _ in $(seq 1 50); do
  code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$state/ca/ca.crt" \
    --resolve "$alias:$host_port:127.0.0.1" "https://$alias:$host_port/v2/" || true)
  [ "$code" = 401 ] && exit 0
  sleep 0.2
done
echo "testbed: registry $name did not answer on 127.0.0.1:$host_port; see: docker logs $name" >&2
exit 1
