"""State of a server after greenlight.deploy.accessories and side_effect.yml: postgres (upgraded
explicitly to the same image under another reference), redis and a custom "cache" accessory
on the private network todo-private; data written before the containers were removed and Docker
restarted is still there; nothing is published on the host; upgrades left a verified dump."""
from __future__ import annotations

import json
import time

import pytest

BASE = "/opt/todo/accessories"
PG_IMAGE = "registry.greenlight.test:5000/greenlight/postgres:15-bookworm"
PSQL = "docker exec todo-postgres psql -U todo -d todo -tAc"
ON_NETWORK = "docker run --rm --network todo-private --entrypoint"


def inspect(host, name: str) -> dict:
    out = host.check_output(f"docker container inspect {name}")
    return json.loads(out)[0]


def wait_running(host, name: str, timeout: float = 60.0) -> dict:
    """Containers come back by their restart policy after the Docker restart in side_effect."""
    deadline = time.monotonic() + timeout
    while True:
        info = inspect(host, name)
        if info["State"]["Status"] == "running" or time.monotonic() > deadline:
            return info
        time.sleep(1)


@pytest.mark.parametrize("name", ["postgres", "redis", "cache"])
def test_container_on_private_network_only(host, name):
    info = wait_running(host, f"todo-{name}")
    assert info["State"]["Status"] == "running"
    assert info["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    networks = info["NetworkSettings"]["Networks"]
    assert list(networks) == ["todo-private"]
    assert name in networks["todo-private"]["Aliases"]
    assert not info["HostConfig"]["PortBindings"]
    assert not any(info["NetworkSettings"]["Ports"].values() or [None])
    labels = info["Config"]["Labels"]
    assert labels["greenlight.accessory"] == name and labels["greenlight.accessory.app"] == "todo"
    # The swap engine takes every container labelled greenlight.app for one of the app's releases.
    assert "greenlight.app" not in labels


@pytest.mark.parametrize("port", [5432, 6379])
def test_nothing_listens_on_the_host(host, port):
    assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening
    assert not host.socket(f"tcp://:::{port}").is_listening


def test_postgres_runs_the_explicitly_upgraded_image(host):
    info = inspect(host, "todo-postgres")
    assert info["Config"]["Image"] == PG_IMAGE + "-b"
    assert info["Config"]["Labels"]["greenlight.accessory.image"] == PG_IMAGE + "-b"


def test_postgres_data_survived_removal_restart_and_upgrade(host):
    wait_running(host, "todo-postgres")
    for _ in range(60):
        if host.run("docker exec todo-postgres pg_isready -q -h 127.0.0.1").rc == 0:
            break
        time.sleep(1)
    assert host.check_output(f"{PSQL} 'SELECT v FROM kept'") == "written-before-removal"


def test_redis_data_survived_removal_and_restart(host):
    wait_running(host, "todo-redis")
    out = host.check_output(
        "docker exec todo-redis sh -c '{ cat /run/secrets/redis-cli-auth; echo GET kept; } | redis-cli'")
    assert out.splitlines()[-1] == "written-before-removal"


def test_redis_refuses_without_password(host):
    out = host.run("docker exec todo-redis sh -c 'echo GET kept | redis-cli'")
    assert "NOAUTH" in out.stdout + out.stderr
    assert "written-before-removal" not in out.stdout


def test_reachable_by_name_from_another_container_on_the_network(host):
    pg = host.run(f"{ON_NETWORK} pg_isready {PG_IMAGE} -h postgres -U todo -d todo")
    assert pg.rc == 0, pg.stdout + pg.stderr
    # The app's view: a password login over the network, the password read from the mounted file.
    login = host.run(
        f"{ON_NETWORK} sh -v {BASE}/postgres/secrets/pgpass:/run/pgpass:ro -e PGPASSFILE=/tmp/p {PG_IMAGE} "
        "-c \"sed 's/^127.0.0.1/postgres/' /run/pgpass > /tmp/p && chmod 600 /tmp/p && "
        "psql -h postgres -U todo -d todo -tAc 'SELECT v FROM kept'\"")
    assert login.stdout.strip() == "written-before-removal", login.stderr
    redis = host.run(
        f"{ON_NETWORK} sh -v {BASE}/redis/secrets/redis-cli-auth:/run/auth:ro {PG_IMAGE.replace('postgres:15', 'redis:7')} "
        "-c '{ cat /run/auth; echo PING; } | redis-cli -h redis'")
    assert redis.stdout.splitlines()[-1:] == ["PONG"], redis.stdout + redis.stderr


def test_not_reachable_from_outside_the_network(host):
    # By its address, not its name (a name never resolves off the network, so that would prove
    # nothing): answered on todo-private, not from a container on Docker's default bridge.
    address = inspect(host, "todo-postgres")["NetworkSettings"]["Networks"]["todo-private"]["IPAddress"]
    assert address
    inside = host.run(f"{ON_NETWORK} pg_isready {PG_IMAGE} -h {address} -t 5")
    assert inside.rc == 0, inside.stdout + inside.stderr
    outside = host.run(f"docker run --rm --entrypoint pg_isready {PG_IMAGE} -h {address} -t 5")
    assert outside.rc != 0, outside.stdout + outside.stderr


@pytest.mark.parametrize("name,uid", [("postgres", 999), ("redis", 999)])
def test_host_directories(host, name, uid):
    assert host.file(BASE).mode == 0o711 and host.file(BASE).user == "root"
    data = host.file(f"{BASE}/{name}/data")
    assert data.is_directory and data.uid == uid and data.mode == 0o700
    secrets = host.file(f"{BASE}/{name}/secrets")
    assert secrets.user == "root" and secrets.mode == 0o711
    for f in host.check_output(f"ls {BASE}/{name}/secrets").split():
        secret = host.file(f"{BASE}/{name}/secrets/{f}")
        assert secret.uid == uid and secret.mode == 0o400, f
    env = host.file(f"{BASE}/{name}/env")
    assert env.user == "root" and env.mode == 0o600


def test_postgres_data_directory_holds_the_cluster(host):
    assert host.file(f"{BASE}/postgres/data/PG_VERSION").content_string.strip() == "15"


def test_custom_accessory_data_removed_only_with_confirmation(host):
    # side_effect touched data/marker, then removed the cache's data with its confirmation: the
    # directory is there again (the accessory still runs) but empty.
    data = host.file(f"{BASE}/cache/data")
    assert data.is_directory
    assert host.check_output(f"ls -A {BASE}/cache/data") == ""
    info = inspect(host, "todo-cache")
    assert info["Config"]["Cmd"] == ["redis-server", "--appendonly", "no", "--save", ""]
    assert "CACHE_ROLE=sessions" in info["Config"]["Env"]


def test_dumps_before_each_upgrade_attempt(host):
    dumps = host.check_output(f"ls {BASE}/postgres/dumps").split()
    # One before the same-major upgrade, one before the refused major upgrade.
    assert len(dumps) == 2, dumps
    assert all(d.endswith(".sql.gz") for d in dumps)
    for d in dumps:
        f = host.file(f"{BASE}/postgres/dumps/{d}")
        assert f.user == "root" and f.mode == 0o600
        content = host.check_output(f"gzip -dc {BASE}/postgres/dumps/{d}")
        assert "written-before-removal" in content
        assert "PostgreSQL database cluster dump complete" in content
    assert host.file(f"{BASE}/postgres/dumps").mode == 0o700


def test_network_is_a_plain_bridge_labelled_for_the_app(host):
    info = json.loads(host.check_output("docker network inspect todo-private"))[0]
    assert info["Driver"] == "bridge"
    assert info["Labels"]["greenlight.app"] == "todo"
