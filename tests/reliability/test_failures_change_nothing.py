"""Promises: a failed registry login and a full disk during the pull stop nothing: the release
that was serving keeps serving (no failed request under load), no container is added or removed,
the deploy lock is free, and the message says what failed. (A pull of a tag that does not exist:
tests/e2e/test_e2e_ssh.py::test_unknown_tag_fails_at_the_pull_naming_the_image.)"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from server_under_test import DOCKER_CONFIG, ENV_FILE, REPOSITORY, LoadGenerator, Server, new_canary

pytestmark = pytest.mark.docker

ROLE_ONLY = str(Path(__file__).with_name("role_only.yml"))


def snapshot(server: Server) -> dict:
    return {"containers": server.containers(), "audit": len(server.audit_lines()),
            "upstream": server.sh("cat /etc/nginx/greenlight/todo-upstream.conf").stdout}


def assert_nothing_changed(server: Server, before: dict, live: str, load: LoadGenerator) -> None:
    summary = load.summary()
    assert summary["requests"] > 50, summary  # the load really ran through the failure
    assert load.failures == [], summary
    assert set(summary["by_release"]) == {live}, summary
    assert server.live_release() == live
    after = snapshot(server)
    assert after["containers"] == before["containers"], "containers were added, removed or stopped"
    assert after["upstream"] == before["upstream"]
    assert after["audit"] == before["audit"], "the swap engine ran (releases.jsonl got a line)"
    assert server.lock_is_free()


def test_failed_registry_login_stops_nothing(settled: Server) -> None:
    """The registry_login step of setup.yml with a token the registry rejects: the login fails
    naming registry and user, the stored credentials stay (a deploy can still pull), the app keeps
    serving. (The roles before it in setup.yml change nothing on a set-up server: each Molecule
    scenario's idempotence step proves that.)"""
    server = settled
    live = server.live_release()
    before = snapshot(server)
    config_before = server.file_digest(DOCKER_CONFIG)
    env_before = server.file_digest(ENV_FILE)
    wrong = new_canary("token")
    load = LoadGenerator(server.port, threads=4, max_seconds=300).start()
    try:
        run = server.playbook(ROLE_ONLY, "-vvv", extra_vars={"reliability_roles": ["greenlight.deploy.registry_login"],
                                                             "vault_registry_token": wrong})
        time.sleep(0.5)
    finally:
        load.stop()
    assert run.rc != 0, run.output[-3000:]
    flat = run.flat()
    assert "docker login to registry.greenlight.test:5000 as greenlight failed for user root" in flat, flat[-3000:]
    assert wrong not in run.output
    assert server.file_digest(DOCKER_CONFIG) == config_before, "a rejected login must keep the stored login"
    assert server.file_digest(ENV_FILE) == env_before
    assert_nothing_changed(server, before, live, load)
    # The kept login still works: the pull a deploy does succeeds.
    server.sh("docker pull -q %s:%s" % (REPOSITORY, live))


def test_disk_full_during_pull_fails_clearly_and_old_release_serves(settled: Server) -> None:
    """/var/lib/docker (a small tmpfs on this server) is full when deploy.yml pulls an image
    whose layers are not on the server yet: the pull fails naming the cause, nothing else moves."""
    server = settled
    live = server.live_release()
    tag = "bad-health"  # never pulled on this server by the suite: its own layers must be written
    assert server.sh("docker image inspect %s:%s" % (REPOSITORY, tag), check=False).returncode != 0
    assert server.sh("stat -f -c %T /var/lib/docker").stdout.strip() == "tmpfs"
    before = snapshot(server)
    filler = "/var/lib/docker/reliability-disk-filler"
    load = LoadGenerator(server.port, threads=4, max_seconds=180).start()
    try:
        # Big blocks first, then small ones for the last pages; dd stops at ENOSPC.
        server.sh("dd if=/dev/zero of=%s bs=1M 2>/dev/null; dd if=/dev/zero of=%s.tail bs=4k 2>/dev/null; true"
                  % (filler, filler), timeout=300)
        assert int(server.sh("df --output=avail -B1 /var/lib/docker | tail -n 1").stdout) < 64 * 1024
        run = server.deploy(tag)
        time.sleep(0.5)
    finally:
        load.stop()
        server.sh("rm -f %s %s.tail" % (filler, filler))
    assert run.rc != 0, run.output[-3000:]
    flat = run.flat()
    assert "docker pull %s:%s failed on %s" % (REPOSITORY, tag, server.name) in flat, flat[-3000:]
    assert "no space left on device" in flat, flat[-3000:]
    assert "Nothing was changed on %s" % server.name in flat
    assert_nothing_changed(server, before, live, load)
    # With space again, the server is healthy: the app answers pages, not only /health.
    assert server.get("/")[0] == 200
