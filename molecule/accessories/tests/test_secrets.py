"""The accessories' passwords appear in no process list (arguments or environment), container
configuration, container log, image or ansible-playbook output, and a changed vault password
becomes the accessory's password on the next run (the last test: it rotates them)."""
from __future__ import annotations

import base64
import json
import os
import pathlib
import secrets
import shlex
import subprocess

EPHEMERAL = pathlib.Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
SCENARIO = pathlib.Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])
INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
PG_IMAGE = "registry.greenlight.test:5000/greenlight/postgres:15-bookworm"
CONTAINERS = ["todo-postgres", "todo-redis", "todo-cache"]


def canaries() -> list[str]:
    return [(EPHEMERAL / name).read_text().strip() for name in ("canary-postgres", "canary-redis")]


def everything_on_the_server(host) -> str:
    parts = [
        host.check_output("ps -eww -o args"),
        host.check_output("ps aexww"),  # every process with its environment
        host.check_output("docker container inspect " + " ".join(CONTAINERS)),
        host.check_output("docker image inspect $(docker image ls -q)"),
        host.check_output("for i in $(docker image ls -q); do docker history --no-trunc $i; done"),
        host.check_output("docker network inspect todo-private"),
    ]
    for c in CONTAINERS:
        parts.append(host.run(f"docker logs {c}").stdout + host.run(f"docker logs {c}").stderr)
    parts.append(host.check_output("journalctl --no-pager -q -o cat | tail -n 5000"))
    return "\n".join(parts)


def test_control_canaries_are_where_they_belong(host):
    """If this fails, the other tests prove nothing: the canaries are not the passwords in use."""
    pg, redis = canaries()
    assert pg in host.file("/opt/todo/accessories/postgres/secrets/postgres_password").content_string
    assert redis in host.file("/opt/todo/accessories/redis/secrets/redis.conf").content_string


def test_no_password_anywhere_on_the_server(host):
    seen = everything_on_the_server(host)
    for canary in canaries():
        assert canary not in seen


def test_rotation_sets_the_new_passwords_and_prints_none(host, tmp_path):
    old_pg, old_redis = canaries()
    new_pg = f"CANARY-{secrets.token_hex(12)}"
    new_redis = f"CANARY-{secrets.token_hex(12)}"
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps({
        "accessories_postgres_password": new_pg + ':"x\\',
        "accessories_redis_password": new_redis + ' "y\\',
        "accessories_postgres_image": PG_IMAGE + "-b",  # what side_effect upgraded to
    }))
    proc = subprocess.run(
        ["ansible-playbook", str(SCENARIO / "converge.yml"), "-vvvv", "--diff", "-i", INVENTORY, "-e", f"@{extra}"],
        capture_output=True, text=True, check=False, env=dict(os.environ, ANSIBLE_NOCOLOR="1"))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    # The server now has the new passwords: the scenario's canaries follow, so verify can run again.
    (EPHEMERAL / "canary-postgres").write_text(new_pg)
    (EPHEMERAL / "canary-redis").write_text(new_redis)
    for canary in (old_pg, old_redis, new_pg, new_redis):
        assert canary not in output
    # The new passwords work from another container on the network, the old ones no longer.
    def pg_login(password: str) -> int:
        return host.run(
            "docker run --rm --network todo-private -e PGPASSWORD=%s --entrypoint psql %s "
            "-h postgres -U todo -d todo -tAc 'SELECT 1'" % (shlex.quote(password), PG_IMAGE)).rc
    assert pg_login(new_pg + ':"x\\') == 0
    assert pg_login(old_pg + ':"x\\') != 0
    def redis_ping(password: str) -> list[str]:
        # AUTH + PING on redis-cli's standard input, base64 on the way so no shell quoting is involved.
        escaped = password.replace("\\", "\\\\").replace('"', '\\"')
        payload = base64.b64encode(('AUTH "%s"\nPING\n' % escaped).encode()).decode()
        return host.run("echo %s | base64 -d | docker exec -i todo-redis redis-cli" % payload).stdout.splitlines()
    assert redis_ping(new_redis + ' "y\\')[-1:] == ["PONG"]
    assert redis_ping(old_redis + ' "y\\')[-1:] != ["PONG"]
    seen = everything_on_the_server(host)
    for canary in (new_pg, new_redis):
        assert canary not in seen
