#!/bin/sh
# Ansible vault password client for CI: prints the password of the vault id Ansible asks for,
# read from an environment variable (a CI secret), so it is never written to disk nor put on a
# command line. Use it through the vault identity list:
#   ANSIBLE_VAULT_IDENTITY_LIST=staging@ci-templates/vault-password-client.sh
#   GREENLIGHT_VAULT_PASSWORD_STAGING=<secret>       (or GREENLIGHT_VAULT_PASSWORD for every id)
# Ansible runs it as: vault-password-client.sh --vault-id <id>
set -eu
id=""
while [ "$#" -gt 0 ]; do
  case "$1" in
    --vault-id) id=${2:-}; shift 2 || shift ;;
    --vault-id=*) id=${1#--vault-id=}; shift ;;
    *) shift ;;
  esac
done
case "$id" in
  *[!A-Za-z0-9_-]*) echo "vault-password-client: unexpected vault id '$id'" >&2; exit 2 ;;
esac
var=GREENLIGHT_VAULT_PASSWORD
if [ -n "$id" ]; then
  var=GREENLIGHT_VAULT_PASSWORD_$(printf '%s' "$id" | tr 'a-z-' 'A-Z_')
fi
eval "password=\${$var:-\${GREENLIGHT_VAULT_PASSWORD:-}}"
if [ -z "$password" ]; then
  echo "vault-password-client: set $var (or GREENLIGHT_VAULT_PASSWORD) to the vault password of '${id:-default}'" >&2
  exit 1
fi
printf '%s\n' "$password"
