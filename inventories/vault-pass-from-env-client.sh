#!/bin/sh
# Vault password client for CI: prints a vault password taken from the environment, so no
# password file is ever written. Because the name ends in "-client", Ansible runs it with
# `--vault-id <id>` and reads the password from stdout:
#   GREENLIGHT_VAULT_PASSWORD_STAGING=... \
#     ansible-playbook playbooks/setup.yml -i inventories/staging \
#     --vault-id staging@inventories/vault-pass-from-env-client.sh
# Looks up GREENLIGHT_VAULT_PASSWORD_<ID> (id upper-cased, "-" and "." as "_"), then
# GREENLIGHT_VAULT_PASSWORD. See docs/secrets.md.
set -eu
id=""
while [ $# -gt 0 ]; do
  case "$1" in
    --vault-id) id="${2:-}"; shift 2 || shift ;;
    --vault-id=*) id="${1#--vault-id=}"; shift ;;
    *) shift ;;
  esac
done
password=""
variable=""
if [ -n "$id" ]; then
  variable="GREENLIGHT_VAULT_PASSWORD_$(printf '%s' "$id" | tr 'a-z.-' 'A-Z__')"
  case "$variable" in
    *[!A-Z0-9_]*) echo "vault-pass-from-env-client: unusable vault id '$id'" >&2; exit 1 ;;
  esac
  password=$(printenv "$variable" || true)
fi
if [ -z "$password" ]; then
  password="${GREENLIGHT_VAULT_PASSWORD:-}"
fi
if [ -z "$password" ]; then
  echo "vault-pass-from-env-client: set ${variable:+$variable or }GREENLIGHT_VAULT_PASSWORD" >&2
  exit 1
fi
printf '%s\n' "$password"
