#!/bin/bash
# Minimal version of the official image's entrypoint: as root, own PGDATA and drop to postgres;
# on the first start (no PG_VERSION) run initdb with the password from POSTGRES_PASSWORD_FILE or
# POSTGRES_PASSWORD (never on a command line), create POSTGRES_DB, allow password logins over TCP.
set -euo pipefail
if [ "${1:-}" = postgres ] && [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" && chown postgres:postgres "$PGDATA" && chmod 0700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
if [ "${1:-}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  user="${POSTGRES_USER:-postgres}" db="${POSTGRES_DB:-${POSTGRES_USER:-postgres}}"
  if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then pw=$(<"$POSTGRES_PASSWORD_FILE"); else pw="${POSTGRES_PASSWORD:-}"; fi
  [ -n "$pw" ] || { echo "entrypoint: set POSTGRES_PASSWORD_FILE or POSTGRES_PASSWORD" >&2; exit 1; }
  initdb --username="$user" --pwfile=<(printf '%s\n' "$pw") --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  unset pw
  printf "listen_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
  printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
  # Temporary server on the socket only, so a TCP health check never sees it.
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  if [ "$db" != postgres ]; then
    psql -v ON_ERROR_STOP=1 -U "$user" -d postgres -q -v db="$db" <<<'CREATE DATABASE :"db";'
  fi
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "entrypoint: initialised $PGDATA (PostgreSQL $PG_MAJOR)"
fi
exec "$@"
