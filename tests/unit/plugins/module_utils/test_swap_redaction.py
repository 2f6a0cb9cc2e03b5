"""Redaction in one place: whatever app-controlled text reaches a failure message, the result or
releases.jsonl (an X-Release header during verify, a Docker error, any exception text), no env
value appears there."""

from __future__ import annotations

import http.server
import json
import threading
import typing as t
from pathlib import Path

import pytest

from ansible_collections.greenlight.deploy.plugins.module_utils._engine import audit, phases_release, redact
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.docker_api import DockerError
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.errors import SwapError
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.options import options_from_dict
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.swap import Swap

from test_proxy_switch import IMAGE_V1, RecordingDocker, _free_port, _options, _web

CANARY = "canary-7f3a9c1e-do-not-print"


class _Leaky(http.server.BaseHTTPRequestHandler):
    """The proxy's answer during verify: the app echoes its secret in X-Release."""

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("X-Release", CANARY)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def leaky_port() -> t.Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Leaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _swap_with_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **extra: t.Any) -> tuple[Swap, RecordingDocker, Path]:
    app = tmp_path / "app"
    app.mkdir()
    env_file = app / "todo.env"
    env_file.write_text("DJANGO_SECRET_KEY=%s\nDJANGO_DEBUG_FALSE=1\n" % CANARY)
    env_file.chmod(0o600)
    old_port, new_port = _free_port(), _free_port()
    values = _options(tmp_path, [old_port, new_port], ["true"], env_file=str(env_file), **extra)
    (tmp_path / "todo-upstream.conf").write_text("server 127.0.0.1:%d;\n" % old_port)
    docker = RecordingDocker([_web("v1", IMAGE_V1, old_port, values)], {})
    swap = Swap(options_from_dict(values), docker=docker)
    monkeypatch.setattr(phases_release, "wait_healthy", lambda run, container_id, port: {"status": 200, "release": "v2"})
    return swap, docker, app / "releases.jsonl"


def _assert_nowhere(caught: pytest.ExceptionInfo, log: Path) -> None:
    result = caught.value.result
    assert CANARY not in str(caught.value)
    assert CANARY not in json.dumps(result)
    assert CANARY not in log.read_text()
    assert "[redacted DJANGO_SECRET_KEY]" in result["msg"] and "[redacted DJANGO_SECRET_KEY]" in result["error"]
    assert "[redacted DJANGO_SECRET_KEY]" in json.loads(log.read_text().splitlines()[-1])["error"]


def test_x_release_echoing_the_secret_during_verify_is_redacted(tmp_path, leaky_port, monkeypatch):
    swap, _docker, log = _swap_with_secret(tmp_path, monkeypatch, proxy_verify_url="http://127.0.0.1:%d/health" % leaky_port,
                                           proxy_verify_timeout=0.5)
    with pytest.raises(SwapError) as caught:
        swap.run()
    assert caught.value.result["failed_phase"] == "switch"
    _assert_nowhere(caught, log)


def test_a_docker_error_carrying_the_secret_is_redacted(tmp_path, monkeypatch):
    swap, docker, log = _swap_with_secret(tmp_path, monkeypatch)

    def create_container(name, config):
        raise DockerError("invalid environment variable: DJANGO_SECRET_KEY=%s" % CANARY, 400)

    docker.create_container = create_container
    with pytest.raises(SwapError) as caught:
        swap.run()
    assert caught.value.result["failed_phase"] == "start"
    _assert_nowhere(caught, log)


def test_audit_record_redacts_the_free_text(tmp_path):
    record = audit.audit_record({"error": "x %s y" % CANARY, "failed_phase": "health",
                                 "pre_switch_output": ["migrating\n%s" % CANARY]}, "todo", {"user": "deploy"},
                                ["DJANGO_SECRET_KEY=%s" % CANARY])
    assert CANARY not in json.dumps(record)
    assert record["error"] == "x [redacted DJANGO_SECRET_KEY] y"


def test_identifiers_that_hold_an_env_value_are_kept():
    """APP_NAME=shop, NODE_ENV=prod, release v2-prod: the audit line and the result keep the app,
    the releases and the snapshot path as they are (rollback and restore-database match on them,
    the smoke check compares the release), while the error text is still redacted."""
    env = ["APP_NAME=shop", "NODE_ENV=prod", "DJANGO_SECRET_KEY=%s" % CANARY]
    result = {"release": "v2-prod", "previous_release": "v1-prod", "image": "registry.example/shop:v2-prod",
              "container_name": "shop-web-v2-prod-a1b2c3", "health_release": "v2-prod",
              "snapshot": "/opt/shop/backups/shop-20261129T000000Z-before-v2-prod.sqlite3",
              "proxy_verified": {"url": "http://127.0.0.1/health", "release": "v2-prod"},
              "error": "boom %s in shop" % CANARY, "failed_phase": "health"}
    record = audit.audit_record(result, "shop", {"user": "deploy", "by": "prod-ci"}, env)
    for key in ("release", "previous_release", "image", "container_name", "snapshot"):
        assert record[key] == result[key], key
    assert record["app"] == "shop" and record["actor"]["by"] == "prod-ci"
    assert record["error"] == "boom [redacted DJANGO_SECRET_KEY] in [redacted APP_NAME]"
    clean = redact.redact_free_text(result, env)
    assert clean["health_release"] == "v2-prod" and clean["proxy_verified"]["release"] == "v2-prod"
    # An answered release that is not the expected one is the app's text: redacted.
    other = redact.redact_free_text(dict(result, health_release=CANARY), env)
    assert other["health_release"] == "[redacted DJANGO_SECRET_KEY]"
