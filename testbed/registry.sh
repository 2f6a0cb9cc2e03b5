#!/usr/bin/env bash
# Start (or reuse) the test bed's private registry: TLS from a test CA made here, htpasswd
# auth, on the Docker network the test bed owns. Idempotent; prints nothing when all is up.
#
# One registry serves every checkout on this machine, so its CA, certificate and password live
# in one machine-wide directory (GREENLIGHT_TESTBED_SHARED, default /var/lib/greenlight-testbed)
# and each checkout's state dir (GREENLIGHT_TESTBED_STATE, default <checkout>/.testbed) links
# to them: ca/, registry/ and registry-password. A second checkout then finds the registry the
# first one started, with the CA and password the first one's servers trust, and keeps it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
state="${GREENLIGHT_TESTBED_STATE:-$here/../.testbed}"
shared="${GREENLIGHT_TESTBED_SHARED:-/var/lib/greenlight-testbed}"
# Names of the Docker resources; the defaults are what docs/contracts.md lists (tests of this
# script use their own).
network="${GREENLIGHT_TESTBED_NETWORK:-greenlight-test}"
name="${GREENLIGHT_REGISTRY_NAME:-greenlight-registry}"
alias=registry.greenlight.test
host_port="${GREENLIGHT_REGISTRY_PORT:-5443}"
user=greenlight
mkdir -p "$state" "$shared"
state=$(cd "$state" && pwd -P)
shared=$(cd "$shared" && pwd -P)
# What the registry needs, kept together (the machine-wide dir, or an older per-checkout one).
credentials=(ca/ca.crt ca/ca.key registry/tls.crt registry/tls.key registry/htpasswd registry-password)

# Two checkouts running this at once take turns.
exec 9>"$shared/.lock"
flock 9

complete() {  # dir: every credential file is there
  local file
  for file in "${credentials[@]}"; do [ -s "$1/$file" ] || return 1; done
}

docker network inspect "$network" >/dev/null 2>&1 || docker network create "$network" >/dev/null

if ! docker image inspect greenlight/registry:bookworm >/dev/null 2>&1; then
  docker build -q -t greenlight/registry:bookworm "$here/registry" >/dev/null
fi

# The running registry's configuration directory: <some state dir>/registry.
mounted=$(docker inspect -f '{{range .Mounts}}{{if eq .Destination "/etc/greenlight-registry"}}{{.Source}}{{end}}{{end}}' \
  "$name" 2>/dev/null || true)

# First run with an empty machine-wide dir: take the CA and password that are already in use --
# those of the running registry (started by another checkout, or by this one before the
# machine-wide dir existed), else this checkout's own -- so no server set up earlier breaks.
if ! complete "$shared"; then
  for source in ${mounted:+"$(dirname "$mounted")"} "$state"; do
    if [ "$source" != "$shared" ] && complete "$source"; then
      mkdir -p "$shared/ca" "$shared/registry"
      cp -a "$source/ca/." "$shared/ca/"
      cp -a "$source/registry/." "$shared/registry/"
      cp -a "$source/registry-password" "$shared/registry-password"
      break
    fi
  done
fi
mkdir -p "$shared/ca" "$shared/registry"

# Test CA and the registry's certificate, made once per machine.
if [ ! -s "$shared/ca/ca.crt" ] || [ ! -s "$shared/ca/ca.key" ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=greenlight test CA" \
    -keyout "$shared/ca/ca.key" -out "$shared/ca/ca.crt" 2>/dev/null
  rm -f "$shared/registry/tls.crt"
fi
if [ ! -s "$shared/registry/tls.crt" ] || [ ! -s "$shared/registry/tls.key" ]; then
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$alias" \
    -keyout "$shared/registry/tls.key" -out "$shared/registry/tls.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1\n' "$alias" >"$shared/registry/ext.cnf"
  openssl x509 -req -in "$shared/registry/tls.csr" -CA "$shared/ca/ca.crt" -CAkey "$shared/ca/ca.key" \
    -CAcreateserial -days 365 -extfile "$shared/registry/ext.cnf" -out "$shared/registry/tls.crt" 2>/dev/null
  chmod 0644 "$shared/registry/tls.key"
fi
# The password is random per machine; htpasswd reads it from stdin, never argv.
if [ ! -s "$shared/registry-password" ]; then
  (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$shared/registry-password")
  rm -f "$shared/registry/htpasswd"
fi
if [ ! -s "$shared/registry/htpasswd" ]; then
  docker run --rm -i greenlight/registry:bookworm htpasswd -niB "$user" \
    <"$shared/registry-password" >"$shared/registry/htpasswd"
fi
cp "$here/registry/config.yml" "$shared/registry/config.yml"

# This checkout's state dir links to the machine-wide files (tests, inventories and Molecule
# read <state>/ca/ca.crt and <state>/registry-password). Its own older copies are dropped: they
# were either the seed above or a CA no registry uses any more.
if [ "$state" != "$shared" ]; then
  for entry in ca registry registry-password; do
    if [ "$(readlink "$state/$entry" 2>/dev/null)" != "$shared/$entry" ]; then
      rm -rf "${state:?}/$entry"
      ln -s "$shared/$entry" "$state/$entry"
    fi
  done
fi

# A registry that serves other files (started before the machine-wide dir, whose CA and password
# were copied above) is replaced by one serving the machine-wide dir: same CA, same password,
# same image store (volume), so clients do not notice.
if [ "$(docker inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" != "true" ] || [ "$mounted" != "$shared/registry" ]; then
  docker rm -f "$name" >/dev/null 2>&1 || true
  if ss -ltn "sport = :$host_port" 2>/dev/null | grep -q LISTEN; then
    echo "testbed: port 127.0.0.1:$host_port is already in use; free it or set GREENLIGHT_REGISTRY_PORT" >&2
    exit 1
  fi
  docker run -d --name "$name" --restart unless-stopped \
    --network "$network" --network-alias "$alias" \
    -p "127.0.0.1:$host_port:5000" \
    -v "$shared/registry:/etc/greenlight-registry:ro" \
    -v "$name-data:/var/lib/docker-registry" \
    greenlight/registry:bookworm >/dev/null
fi
# Wait until it answers over TLS with the test CA (401 = up, auth required).
for _ in $(seq 1 50); do
  code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$shared/ca/ca.crt" \
    --resolve "$alias:$host_port:127.0.0.1" "https://$alias:$host_port/v2/" || true)
  [ "$code" = 401 ] && exit 0
  sleep 0.2
done
echo "testbed: registry $name did not answer on 127.0.0.1:$host_port; see: docker logs $name" >&2
exit 1
