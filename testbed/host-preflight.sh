#!/usr/bin/env bash
# Checks and prepares the machine that runs `make demo` / `make test`: a Debian-family host,
# root, apt. Installs what is missing (Docker engine, debootstrap, nginx, openssl, curl) and
# starts a Docker engine when `docker info` fails. One clear line and a non-zero exit when
# something cannot be had.
set -euo pipefail
die() { echo "greenlight: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (the test bed installs packages and runs a Docker engine)"
command -v apt-get >/dev/null || die "apt-get not found: the test bed needs a Debian or Ubuntu machine"
command -v python3 >/dev/null || die "python3 not found: apt-get install python3"

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
command -v ss >/dev/null || need+=(iproute2)
command -v sqlite3 >/dev/null || need+=(sqlite3)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
if [ "${#need[@]}" -gt 0 ]; then
  echo "greenlight: installing ${need[*]}"
  apt-get update -qq >/dev/null || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || die "apt-get install ${need[*]} failed"
fi
# The Debian nginx package may start a system nginx on :80; the test bed runs its own
# instances, so a system one is left alone but must not be needed.

if ! docker info >/dev/null 2>&1; then
  echo "greenlight: no Docker engine answers; starting one"
  if [ -d /run/systemd/system ]; then
    systemctl enable --now docker >/dev/null 2>&1 || die "systemctl start docker failed"
  else
    mkdir -p /var/log
    nohup dockerd >/var/log/greenlight-dockerd.log 2>&1 &
  fi
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || die "the Docker engine did not start; see /var/log/greenlight-dockerd.log"
fi
