"""Mode prepare (prepare.py): lock fail-fast, pull with the registry login, noop detection."""

from __future__ import annotations

import http.server
import socket
import subprocess
import threading
import time

import pytest
from engine_fakes import IMAGE_V2, FakeDocker, options, web

from ansible_collections.greenlight.deploy.plugins.module_utils._engine import registry
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.errors import SwapError
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.lock import DeployLock
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.result import OUTCOME_KEYS
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.swap import run_swap

HOST = socket.gethostname()


@pytest.fixture
def docker_cli(monkeypatch):
    """subprocess.run of the docker client, recorded; a pull puts todo:v2 into the fake Docker."""
    state = {"calls": [], "docker": None, "fail": False}

    def run(argv, env=None, **kwargs):
        state["calls"].append((argv, env))
        if state["fail"]:
            return subprocess.CompletedProcess(argv, 1, stdout=b"pull access denied for todo")
        if argv[1] == "pull" and state["docker"] is not None:
            state["docker"].images["todo:v2"] = {"Id": IMAGE_V2, "RepoDigests": ["registry.test/todo@sha256:" + "2" * 64]}
        return subprocess.CompletedProcess(argv, 0, stdout=b"")

    monkeypatch.setattr(registry.subprocess, "run", run)
    return state


def _prepare(tmp_path, docker, **extra):
    (tmp_path / "app").mkdir(exist_ok=True)
    (tmp_path / "docker").mkdir(mode=0o700, exist_ok=True)
    return run_swap(options(tmp_path, mode="prepare", docker_config=str(tmp_path / "docker"), **extra), docker=docker)


def test_prepare_pulls_with_the_registry_login_and_says_a_swap_is_needed(tmp_path, docker_cli):
    docker = FakeDocker()
    del docker.images["todo:v2"]
    docker_cli["docker"] = docker
    result = _prepare(tmp_path, docker)
    (argv, env), = docker_cli["calls"]
    assert argv == ["docker", "pull", "--quiet", "todo:v2"] and env["DOCKER_CONFIG"] == str(tmp_path / "docker")
    assert env["PATH"] == registry.SAFE_PATH
    assert result["changed"] is True and result["noop"] is False and result["image_id"] == IMAGE_V2
    assert result["image_digest"].startswith("registry.test/todo@") and result["live_release"] is None
    assert result["outcome"]["state"] == "prepared" and set(result["outcome"]) == set(OUTCOME_KEYS)
    assert result["switched"] is False and docker.calls == []  # nothing created, started or stopped
    assert not (tmp_path / "app" / "deploy.lock").exists() and not (tmp_path / "app" / "releases.jsonl").exists()


def test_prepare_says_noop_when_the_same_release_is_live(tmp_path, docker_cli):
    values = options(tmp_path)
    (tmp_path / "todo-upstream.conf").write_text("server 127.0.0.1:18001;\n")
    docker = FakeDocker([web(values, "v2", IMAGE_V2, 18001)])
    docker_cli["docker"] = docker
    result = _prepare(tmp_path, docker)
    assert result["noop"] is True and result["changed"] is False and result["live_release"] == "v2"
    assert result["outcome"]["release"] == "v2" and result["outcome"]["live"] == "v2"


def test_prepare_fails_fast_naming_the_deploy_that_holds_the_lock(tmp_path, docker_cli):
    (tmp_path / "app").mkdir()
    holder = DeployLock(str(tmp_path / "app" / "deploy.lock"),
                        {"pid": 4242, "user": "ci", "release": "v9", "phase": "health", "since": "2026-01-01T00:00:00Z"})
    holder.acquire(1)
    started = time.monotonic()
    try:
        with pytest.raises(SwapError) as caught:
            _prepare(tmp_path, FakeDocker(), lock_timeout=60)
    finally:
        holder.release()
    assert time.monotonic() - started < 2  # no waiting for lock_timeout
    message = str(caught.value)
    assert "pid 4242" in message and "user ci" in message and "phase health" in message and "release v9" in message
    assert message.endswith("Nothing was changed on %s." % HOST)
    outcome = caught.value.result["outcome"]
    assert outcome["state"] == "failed" and outcome["phase"] == "preflight" and docker_cli["calls"] == []


def test_prepare_waits_for_the_background_stop_of_the_previous_run(tmp_path, docker_cli):
    (tmp_path / "app").mkdir()
    holder = DeployLock(str(tmp_path / "app" / "deploy.lock"), {"pid": 1, "phase": "stop_old"})
    holder.acquire(1)
    threading.Timer(0.5, holder.release).start()
    docker = FakeDocker()
    docker_cli["docker"] = docker
    result = _prepare(tmp_path, docker, stop_grace_seconds=5)
    assert result["outcome"]["state"] == "prepared" and result["outcome"]["phases"]["preflight"] >= 0.4


def test_a_failed_pull_changes_nothing_and_says_so(tmp_path, docker_cli):
    docker_cli["fail"] = True
    with pytest.raises(SwapError) as caught:
        _prepare(tmp_path, FakeDocker())
    message = str(caught.value)
    assert message.startswith("docker pull todo:v2 failed on %s" % HOST) and "pull access denied" in message
    assert message.endswith("Nothing was changed on %s." % HOST)
    assert caught.value.result["outcome"]["phase"] == "pull" and caught.value.result["changed"] is False


def test_check_mode_asks_the_registry_and_pulls_nothing(tmp_path, docker_cli):
    docker = FakeDocker()
    del docker.images["todo:v2"]
    result = _prepare(tmp_path, docker, check_mode=True)
    assert [argv[1] for argv, _env in docker_cli["calls"]] == ["manifest"]
    assert result["outcome"]["state"] == "would-pull" and "todo:v2" not in docker.images


def test_every_failure_has_an_outcome_even_bad_options(tmp_path):
    with pytest.raises(SwapError) as caught:
        run_swap({"app_name": "todo", "mode": "prepare"})
    outcome = caught.value.result["outcome"]
    assert set(outcome) == set(OUTCOME_KEYS) and outcome["state"] == "failed" and outcome["phase"] == "options"
    assert caught.value.result["switched"] is False and caught.value.result["live_release"] == "unknown"


def test_a_held_lock_is_named_as_deploy_yml_says_it_with_what_serves(tmp_path, docker_cli):
    """The one-line message deploy.yml prints (app, lock file, host, holder) and the live release,
    read although the lock is held (the summary's "live:")."""
    values = options(tmp_path)
    (tmp_path / "app").mkdir()
    (tmp_path / "todo-upstream.conf").write_text("server 127.0.0.1:18001;\n")
    lock_file = tmp_path / "app" / "deploy.lock"
    holder = DeployLock(str(lock_file), {"pid": 4242, "user": "ci", "release": "v9", "phase": "health",
                                         "action": "deploy", "since": "2026-01-01T00:00:00Z"})
    holder.acquire(1)
    try:
        with pytest.raises(SwapError) as caught:
            _prepare(tmp_path, FakeDocker([web(values, "v1", "sha256:" + "1" * 64, 18001)]))
    finally:
        holder.release()
    assert str(caught.value) == (
        "Another deploy of todo holds %s on %s: deploy of release v9 by pid 4242 (user ci), phase health, since "
        "2026-01-01T00:00:00Z. Wait for it to finish and re-run (the lock frees itself when that process ends). "
        "Nothing was changed on %s." % (lock_file, HOST, HOST))
    assert caught.value.result["live_release"] == "v1" and caught.value.result["outcome"]["live"] == "v1"


class _Answer(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(self.status)
        self.send_header("X-Release", "v2")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("status", [200, 502])
def test_a_noop_prepare_asks_the_proxy_once_as_the_swap_does(tmp_path, docker_cli, status):
    """No swap follows a noop, so prepare's own GET of proxy_verify_url is what spares deploy.yml a
    smoke request: proxy_verified when nginx answers an accepted status, absent otherwise."""
    handler = type("Answer", (_Answer,), {"status": status})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = "http://127.0.0.1:%d/health" % server.server_address[1]
    try:
        values = options(tmp_path, proxy_verify_url=url)
        (tmp_path / "todo-upstream.conf").write_text("server 127.0.0.1:18001;\n")
        docker = FakeDocker([web(values, "v2", IMAGE_V2, 18001)])
        docker_cli["docker"] = docker
        result = _prepare(tmp_path, docker, proxy_verify_url=url)
    finally:
        server.shutdown()
        server.server_close()
    assert result["noop"] is True
    if status == 200:
        assert result["proxy_verified"] == {"url": url, "status": 200, "release": "v2", "attempts": 1}
    else:
        assert "proxy_verified" not in result


def test_prepare_refuses_a_registry_login_others_can_change(tmp_path, docker_cli):
    # Root runs the Docker client with docker_config (credential helpers, CLI plugins): a
    # directory another user can write would let that user choose what root runs.
    docker = FakeDocker()
    (tmp_path / "docker").mkdir(mode=0o700)
    (tmp_path / "docker").chmod(0o777)
    with pytest.raises(SwapError) as failed:
        _prepare(tmp_path, docker)
    assert "refusing docker_config" in str(failed.value) and "writable by group and others" in str(failed.value)
    assert failed.value.result["outcome"]["phase"] == "pull"
    assert docker_cli["calls"] == []  # the Docker client never ran
