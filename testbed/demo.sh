#!/usr/bin/env bash
# `make demo`: the whole story against a local "server" container (systemd + its own Docker
# engine, on the test bed network beside the TLS registry):
#   setup.yml (Docker, deploy user, env file from the demo vault, registry login, nginx, deploy.sh)
#   -> deploy v1 -> deploy v2 while a client keeps requesting the page (and counts failures)
#   -> rollback to v1 -> where to look.
# Idempotent: a second run reuses the container and setup, and v1 is already live.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
state="${GREENLIGHT_TESTBED_STATE:-$repo/.testbed}"
port="${GREENLIGHT_DEMO_PORT:-8080}"
name=greenlight-demo
url="http://127.0.0.1:$port"
logs="$state/demo"
mkdir -p "$logs"

source "$here/server-run.sh"
cd "$repo"
export ANSIBLE_COLLECTIONS_PATH="$repo/.collections"
export PATH="$repo/.venv/bin:$PATH"
# docker exec per task is the slow part of a local demo; pipelining halves the round trips.
export ANSIBLE_PIPELINING=True ANSIBLE_FORCE_COLOR=false ANSIBLE_NOCOLOR=1
export GREENLIGHT_DEPLOY_ACTOR="make demo"
vault=(--vault-id demo@inventories/demo/vault-password.DEMO-ONLY.txt)

say() { printf 'demo: %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# run <label> <log> <command...>: full Ansible output goes to the log, the summary to the terminal.
run() {
  local label=$1 log=$2 started rc=0; shift 2
  started=$(date +%s)
  "$@" -e greenlight_deploy_summary_file="$logs/summary.json" >"$log" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then
    tail -n 40 "$log" >&2
    die "$label failed (exit $rc); full output: $log"
  fi
  say "$label: done in $(( $(date +%s) - started ))s (log: $log)"
}

summary() {  # one line per server from the JSON summary deploy.yml/rollback.yml wrote
  python3 - "$logs/summary.json" <<'EOF'
import json, sys
for host, o in json.load(open(sys.argv[1])).items():
    phases = o.get("phases") or {}
    print("demo:   %s: %s, live release %s%s, image %s%s" % (
        host, o.get("state"), o.get("live"),
        " (previous %s)" % o["previous"] if o.get("previous") and o.get("state") != "unchanged" else "",
        o.get("digest") or o.get("image"),
        ", %.1fs in the swap" % sum(v for k, v in phases.items() if k != "pull") if phases else ""))
EOF
}

# 1. The server container (kept between runs; `make demo-down` removes it).
if [ "$(docker inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" != true ]; then
  docker rm -f "$name" >/dev/null 2>&1 || true
  if ss -ltn "sport = :$port" | grep -q LISTEN; then
    die "port 127.0.0.1:$port is in use; free it or run GREENLIGHT_DEMO_PORT=<port> make demo"
  fi
  say "starting the server container $name (127.0.0.1:$port -> its nginx on port 80)"
  server_run "$name" greenlight/server-docker:bookworm -p "127.0.0.1:$port:80"
fi
server_wait_docker "$name"
# The first demo ran the app straight on the server's port 80; nginx owns that port now.
docker exec "$name" sh -c 'docker rm -f todo >/dev/null 2>&1 || true'

# 2. One-time server setup (idempotent; a second run changes nothing).
run "setup.yml" "$logs/setup.log" \
  ansible-playbook playbooks/setup.yml -i inventories/demo "${vault[@]}"

# 3. v1 live (unchanged when a previous demo left it live).
run "deploy v1" "$logs/deploy-v1.log" \
  ansible-playbook playbooks/deploy.yml -i inventories/demo "${vault[@]}" -e app_image_tag=v1
summary

# 4. v2 while a client requests the page without pause; every answer must be a 200.
say "deploying v2 while a client keeps requesting $url/ ..."
load_log="$logs/load.txt"
stop="$logs/load.stop"
rm -f "$stop" "$load_log"
python3 - "$url/" "$stop" "$load_log" <<'EOF' &
import http.client, os, sys, time, urllib.parse
url, stop, out = sys.argv[1:4]
parts = urllib.parse.urlsplit(url)
total = failed = 0
releases = {}
errors = []
while not os.path.exists(stop):
    try:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        conn.request("GET", parts.path)
        response = conn.getresponse()
        response.read()
        release = response.getheader("X-Release", "?")
        releases[release] = releases.get(release, 0) + 1
        if response.status != 200:
            failed += 1
            errors.append("HTTP %d" % response.status)
        conn.close()
    except OSError as exc:
        failed += 1
        errors.append(str(exc))
    total += 1
with open(out, "w") as handle:
    handle.write("%d %d %s %s\n" % (total, failed, ",".join("%s=%d" % kv for kv in sorted(releases.items())),
                                     "; ".join(sorted(set(errors))[:3])))
EOF
load_pid=$!
sleep 1
run "deploy v2" "$logs/deploy-v2.log" \
  ansible-playbook playbooks/deploy.yml -i inventories/demo "${vault[@]}" -e app_image_tag=v2
sleep 1
touch "$stop"
wait "$load_pid"
read -r total failed releases errors <"$load_log" || true
summary
say "during the v2 deploy: $total requests to $url/, $failed failed (answers by release: $releases)${errors:+; errors: $errors}"
[ "${failed:-1}" = 0 ] || die "requests failed during the deploy"

# 5. Back to v1 with the same zero-downtime swap.
run "rollback" "$logs/rollback.log" \
  ansible-playbook playbooks/rollback.yml -i inventories/demo "${vault[@]}"
summary

live=$(curl -sf "$url/health" || true)
[ -n "$live" ] || die "the app did not answer on $url/health"
say "live now: $live"
say "open $url/   (health: $url/health)"
say "audit log: docker exec $name cat /opt/todo/releases.jsonl"
say "on the server: docker exec -u deploy $name /opt/todo/deploy.sh status   (or: deploy.sh v2 / deploy.sh rollback)"
say "stop it: make demo-down"
