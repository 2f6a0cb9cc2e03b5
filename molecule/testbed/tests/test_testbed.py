"""The test bed works for real: registry over TLS, inner Docker engine, app reachable."""
from __future__ import annotations

import json
import time
import urllib.request

BASE = "http://127.0.0.1:18080"


def _get(path: str, timeout: float = 60.0) -> tuple[int, dict[str, str], str]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(BASE + path, timeout=5) as resp:
                return resp.status, dict(resp.headers), resp.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_inner_docker_engine_runs(host) -> None:
    assert host.service("docker").is_running
    assert host.run("docker info --format '{{.Driver}}'").stdout.strip() == "overlay2"


def test_registry_ca_trusted_and_login_stored(host) -> None:
    ca = host.file("/etc/docker/certs.d/registry.greenlight.test:5000/ca.crt")
    assert ca.exists and "BEGIN CERTIFICATE" in ca.content_string
    config = host.file("/root/.docker/config.json")
    assert config.mode == 0o600
    assert "registry.greenlight.test:5000" in json.loads(config.content_string)["auths"]


def test_image_came_from_the_registry(host) -> None:
    digests = host.check_output(
        "docker image inspect -f '{{json .RepoDigests}}' registry.greenlight.test:5000/greenlight/todo:v1"
    )
    assert "registry.greenlight.test:5000/greenlight/todo@sha256:" in digests


def test_list_page_served_through_published_port() -> None:
    status, _, body = _get("/")
    assert status == 200
    assert "<title>To-Do lists</title>" in body or "To-Do lists" in body


def test_health_reports_release() -> None:
    status, _, body = _get("/health")
    assert status == 200
    assert json.loads(body)["release"] == "v1"
