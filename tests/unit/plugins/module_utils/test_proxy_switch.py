"""A proxy reload that fails, and an upstream file that names nothing that runs (no Docker, no nginx).

The outage these guard against: the reload fails after the new upstream file was renamed in, the
failed deploy removes the new container, and the next deploy's cleanup stops every running web
container because none matches the port the upstream file names.
"""

from __future__ import annotations

import http.server
import json
import socket
import sys
import threading
import typing as t
from pathlib import Path

import pytest

from ansible_collections.greenlight.deploy.plugins.module_utils._engine import docker_api, errors, phases_prepare, phases_release, phases_traffic
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.errors import SwapError
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.labels import config_hash
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.options import options_from_dict
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.plan import make_plan, predict
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.swap import Swap

IMAGE_V1 = "sha256:" + "11" * 32
IMAGE_V2 = "sha256:" + "22" * 32


# -- switch_upstream ----------------------------------------------------------------------------
def _counting_reload(tmp_path: Path, fail_first: int) -> tuple[list[str], Path]:
    """A reload command that fails its first `fail_first` calls (like `nginx -s reload` with the
    pid file gone), then succeeds; every call is counted in a file."""
    calls = tmp_path / "reload-calls"
    code = ("import sys; p = sys.argv[1]; n = len(open(p).read()) if __import__('os').path.exists(p) else 0; "
            "open(p, 'a').write('x'); "
            "sys.exit(0) if n >= %d else (print('open() \"/run/nginx.pid\" failed (2: No such file or directory)'), "
            "sys.exit(1))" % fail_first)
    return [sys.executable, "-c", code, str(calls)], calls


def test_failed_reload_restores_the_previous_file_and_reloads_it(tmp_path):
    upstream = tmp_path / "app-upstream.conf"
    upstream.write_text("server 127.0.0.1:8001;\n")
    reload, calls = _counting_reload(tmp_path, fail_first=1)
    with pytest.raises(errors.ProxyReloadError) as caught:
        phases_traffic.switch_upstream(str(upstream), 8002, ["true"], reload)
    error = caught.value
    assert upstream.read_text() == "server 127.0.0.1:8001;\n"
    assert error.restored is True and error.reloaded is True and error.uncertain is False
    assert error.file_port == 8001
    assert calls.read_text() == "xx"  # the failed reload, then the reload of the restored file
    assert "nginx.pid" in str(error) and "127.0.0.1:8001" in str(error)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app-upstream.conf", "reload-calls"]


def test_reload_that_keeps_failing_is_uncertain_but_the_file_names_the_old_port(tmp_path):
    upstream = tmp_path / "app-upstream.conf"
    upstream.write_text("server 127.0.0.1:8001;\n")
    reload, calls = _counting_reload(tmp_path, fail_first=99)
    with pytest.raises(errors.ProxyReloadError) as caught:
        phases_traffic.switch_upstream(str(upstream), 8002, ["true"], reload)
    error = caught.value
    assert upstream.read_text() == "server 127.0.0.1:8001;\n"
    assert error.restored is True and error.reloaded is False and error.uncertain is True
    assert calls.read_text() == "xx"


def test_switch_back_keeps_the_target_file_when_the_reload_fails(tmp_path):
    """Switching back to the known-good release: the file keeps naming it even if nginx cannot
    be reloaded now, so nginx reads it at its next (re)start and the next deploy re-applies it."""
    upstream = tmp_path / "app-upstream.conf"
    upstream.write_text("server 127.0.0.1:8002;\n")
    reload, calls = _counting_reload(tmp_path, fail_first=99)
    with pytest.raises(errors.ProxyReloadError) as caught:
        phases_traffic.switch_upstream(str(upstream), 8001, ["true"], reload, restore_on_reload_failure=False)
    assert upstream.read_text() == "server 127.0.0.1:8001;\n"
    assert caught.value.restored is False and caught.value.uncertain is True and caught.value.file_port == 8001
    assert calls.read_text() == "x"


# -- the engine with a fake Docker that records what it does ------------------------------------------
class RecordingDocker:
    """Enough of DockerClient for a deploy whose new container never answers through a real
    socket: creating, starting, stopping and removing are recorded."""

    def __init__(self, containers: list[dict[str, t.Any]], health_ports: dict[int, str]) -> None:
        self.containers = containers
        self.calls: list[tuple[str, str]] = []
        self.health_ports = health_ports
        self.images = {"greenlight/todo:v2": {"Id": IMAGE_V2, "RepoDigests": []},
                       IMAGE_V1: {"Id": IMAGE_V1, "RepoDigests": []}, IMAGE_V2: {"Id": IMAGE_V2, "RepoDigests": []}}

    def inspect_image(self, reference):
        if reference not in self.images:
            raise docker_api.NotFound("no such image")
        return self.images[reference]

    def list_containers(self, labels=None, all=True):
        return [c for c in self.containers if all or c["State"] == "running"]

    def _find(self, container_id):
        return next(c for c in self.containers if c["Id"] == container_id)

    def create_container(self, name, config):
        port = int(config["Labels"]["greenlight.port"])
        self.containers.append({"Id": "new-%d" % port, "Names": ["/" + name], "State": "created",
                                "ImageID": config["Image"], "Created": 10 ** 9, "Labels": dict(config["Labels"])})
        self.calls.append(("create", name))
        return "new-%d" % port

    def start_container(self, container_id):
        self.calls.append(("start", container_id))
        self._find(container_id)["State"] = "running"

    def inspect_container(self, container_id):
        return {"State": {"Running": self._find(container_id)["State"] == "running"}}

    def stop_container(self, container_id, timeout):
        self.calls.append(("stop", container_id))
        self._find(container_id)["State"] = "exited"

    def remove_container(self, container_id, force=False):
        self.calls.append(("remove", container_id))
        self.containers.remove(self._find(container_id))

    def container_logs(self, container_id, tail=50):
        return ""


def _web(release: str, image_id: str, port: int, opts: dict[str, t.Any], state: str = "running",
         created: int = 1) -> dict[str, t.Any]:
    parsed = options_from_dict(opts)
    digest = config_hash(image_id, "web", None, parsed.container_port, parsed.mounts, None, parsed.restart_policy,
                         parsed.labels)
    return {"Id": "id-%s" % release, "Names": ["/todo-web-%s-abc123" % release], "State": state,
            "ImageID": image_id, "Created": created,
            "Labels": {"greenlight.app": "todo", "greenlight.release": release, "greenlight.service": "web",
                       "greenlight.config-hash": digest, "greenlight.port": str(port),
                       "greenlight.image": "greenlight/todo:%s" % release}}


class _Health(http.server.BaseHTTPRequestHandler):
    release = "v1"

    def do_GET(self):  # noqa: N802 - http.server's name
        body = json.dumps({"release": self.release}).encode()
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Release", self.release)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def app_port() -> t.Iterator[int]:
    """A stand-in for a running release answering its health path on 127.0.0.1."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _options(tmp_path: Path, ports: list[int], reload: t.Any, **extra: t.Any) -> dict[str, t.Any]:
    values = {"app_name": "todo", "image": "greenlight/todo:v2", "app_dir": str(tmp_path / "app"),
              "upstream_file": str(tmp_path / "todo-upstream.conf"), "host_ports": ports,
              "proxy_test_command": ["true"], "proxy_reload_command": reload, "health_interval": 0.05,
              "health_timeout": 5, "drain_seconds": 0.2, "drain_until_idle": False}
    values.update(extra)
    return values


def test_failed_reload_keeps_the_old_release_live_and_says_so(tmp_path, app_port, monkeypatch):
    """The reload fails once, the restored file reloads: nginx serves v1, the new container is
    removed, and the message says the old file was put back."""
    new_port = _free_port()
    reload, _calls = _counting_reload(tmp_path, fail_first=1)
    values = _options(tmp_path, [app_port, new_port], reload)
    (tmp_path / "todo-upstream.conf").write_text("server 127.0.0.1:%d;\n" % app_port)
    docker = RecordingDocker([_web("v1", IMAGE_V1, app_port, values)], {})
    # The new container's health is answered by the same stand-in server: point its port there.
    values["health_path"] = "/health"
    swap = Swap(options_from_dict(values), docker=docker)
    monkeypatch.setattr(phases_release, "wait_healthy", lambda run, container_id, port: {"status": 200, "release": "v2"})  # no real v2 container here
    with pytest.raises(SwapError) as caught:
        swap.run()
    message = str(caught.value)
    assert (tmp_path / "todo-upstream.conf").read_text() == "server 127.0.0.1:%d;\n" % app_port
    assert ("remove", "new-%d" % new_port) in docker.calls
    assert ("stop", "id-v1") not in docker.calls
    assert "failed in phase switch" in message
    assert "put the previous upstream file back" in message and "still serving" in message
    result = caught.value.result
    assert result["live_port"] == app_port and result.get("proxy_uncertain") is not True


def test_reload_that_keeps_failing_keeps_the_new_container(tmp_path, app_port, monkeypatch):
    """nginx cannot be reloaded at all: whether it read the new file is unknown, so nothing that
    may serve is removed, the file names the previous release again and the message says so."""
    new_port = _free_port()
    reload, _calls = _counting_reload(tmp_path, fail_first=99)
    values = _options(tmp_path, [app_port, new_port], reload, sqlite_path=str(tmp_path / "db.sqlite3"),
                      pre_switch_commands=[])
    (tmp_path / "todo-upstream.conf").write_text("server 127.0.0.1:%d;\n" % app_port)
    docker = RecordingDocker([_web("v1", IMAGE_V1, app_port, values)], {})
    swap = Swap(options_from_dict(values), docker=docker)
    monkeypatch.setattr(phases_release, "wait_healthy", lambda run, container_id, port: {"status": 200, "release": "v2"})
    with pytest.raises(SwapError) as caught:
        swap.run()
    message = str(caught.value)
    assert (tmp_path / "todo-upstream.conf").read_text() == "server 127.0.0.1:%d;\n" % app_port
    assert not [call for call in docker.calls if call[0] in ("remove", "stop")]
    assert "could not be reloaded" in message and "kept running" in message
    assert "still serving" not in message
    assert caught.value.result["proxy_uncertain"] is True


def test_failed_switch_back_does_not_claim_the_new_release_is_live(tmp_path, app_port, monkeypatch):
    """Verify through the proxy fails, and switching back cannot reload nginx either."""
    new_port = _free_port()
    reload, _calls = _counting_reload(tmp_path, fail_first=0)
    values = _options(tmp_path, [app_port, new_port], reload,
                      proxy_verify_url="http://127.0.0.1:%d/never" % app_port, proxy_verify_timeout=0.3)
    (tmp_path / "todo-upstream.conf").write_text("server 127.0.0.1:%d;\n" % app_port)
    docker = RecordingDocker([_web("v1", IMAGE_V1, app_port, values)], {})
    swap = Swap(options_from_dict(values), docker=docker)
    monkeypatch.setattr(phases_release, "wait_healthy", lambda run, container_id, port: {"status": 200, "release": "v2"})
    real_switch = phases_traffic.switch_upstream

    def switch(path, port, test_command, reload_command, *args, **kwargs):
        if port == app_port:  # the switch back: nginx is gone by now
            return real_switch(path, port, test_command, ["false"], *args, **kwargs)
        return real_switch(path, port, test_command, reload_command, *args, **kwargs)

    phases_traffic.switch_upstream = switch
    try:
        with pytest.raises(SwapError) as caught:
            swap.run()
    finally:
        phases_traffic.switch_upstream = real_switch
    message = str(caught.value)
    assert "switched the proxy back" not in message
    assert "release v2 is live" not in message
    assert "could not switch the proxy back" in message and "kept running" in message
    assert (tmp_path / "todo-upstream.conf").read_text() == "server 127.0.0.1:%d;\n" % app_port
    assert not [call for call in docker.calls if call[0] in ("remove", "stop")]
    assert caught.value.result["proxy_uncertain"] is True


# -- cleanup when the upstream file names nothing that runs -------------------------------------------
def test_cleanup_adopts_the_running_release_instead_of_stopping_it(tmp_path, app_port, monkeypatch):
    """The state the old bug left behind: the upstream file names the port of a removed
    container, v1 runs and serves. The next deploy must not stop v1 (outage, rollback target
    gone): it points the upstream file at v1, says so, and swaps to v2 from there."""
    new_port = _free_port()
    values = _options(tmp_path, [app_port, new_port], ["true"])
    (tmp_path / "todo-upstream.conf").write_text("server 127.0.0.1:%d;\n" % new_port)  # nothing runs there
    docker = RecordingDocker([_web("v1", IMAGE_V1, app_port, values)], {})
    swap = Swap(options_from_dict(values), docker=docker)
    plan = make_plan(swap.ctx)
    assert plan.live is None and [c["Id"] for c in plan.others] == ["id-v1"]
    assert any("adopt" in step for step in predict(swap.ctx.opts, plan))

    monkeypatch.setattr(phases_release, "wait_healthy", lambda run, container_id, port: {"status": 200, "release": "v2"})
    result = swap.run()
    assert result["adopted"] == {"container": "todo-web-v1-abc123", "release": "v1", "port": app_port,
                                 "upstream_port_before": new_port}
    # v1 was never stopped before the switch to v2, and it is kept (stopped) for rollback.
    calls = docker.calls
    assert calls.index(("start", "new-%d" % new_port)) < calls.index(("stop", "id-v1"))
    assert ("remove", "id-v1") not in calls
    assert result["previous_release"] == "v1" and result["release"] == "v2"
    assert (tmp_path / "todo-upstream.conf").read_text() == "server 127.0.0.1:%d;\n" % new_port
    assert [c["State"] for c in docker.containers if c["Id"] == "id-v1"] == ["exited"]


def test_cleanup_adopts_the_newest_healthy_one(tmp_path, app_port):
    dead_port, nowhere = _free_port(), _free_port()
    values = _options(tmp_path, [app_port, dead_port], ["true"], check_mode=False)
    (tmp_path / "todo-upstream.conf").write_text("server 127.0.0.1:%d;\n" % nowhere)
    newer_unhealthy = _web("v3", IMAGE_V2, dead_port, values, created=5)  # nothing answers on dead_port
    docker = RecordingDocker([_web("v1", IMAGE_V1, app_port, values, created=1), newer_unhealthy], {})
    swap = Swap(options_from_dict(values), docker=docker)
    plan = make_plan(swap.ctx)
    cleaned = phases_prepare.cleanup(swap.ctx, plan)
    assert swap.ctx.result["adopted"]["release"] == "v1"
    assert (tmp_path / "todo-upstream.conf").read_text() == "server 127.0.0.1:%d;\n" % app_port
    assert ("stop", "id-v1") not in docker.calls and ("remove", "id-v1") not in docker.calls
    assert ("stop", "id-v3") in docker.calls and cleaned == ["todo-web-v3-abc123"]


def test_cleanup_without_a_healthy_candidate_stops_nothing_it_cannot_replace(tmp_path):
    """No running web container answers its health path (probes time out exactly under load), so
    none can be adopted, yet nginx may still route to one: nothing is stopped or removed, the run
    fails in cleanup before anything else, and the message says what runs, what the upstream file
    names and what to do."""
    port_a, port_b, nowhere = _free_port(), _free_port(), _free_port()
    values = _options(tmp_path, [port_a, port_b], ["true"])
    (tmp_path / "todo-upstream.conf").write_text("server 127.0.0.1:%d;\n" % nowhere)
    docker = RecordingDocker([_web("v1", IMAGE_V1, port_a, values)], {})
    swap = Swap(options_from_dict(values), docker=docker)
    with pytest.raises(SwapError) as caught:
        swap.run()
    assert "adopted" not in caught.value.result
    assert not [call for call in docker.calls if call[0] in ("stop", "remove", "create")], docker.calls
    assert [c["State"] for c in docker.containers] == ["running"]
    assert (tmp_path / "todo-upstream.conf").read_text() == "server 127.0.0.1:%d;\n" % nowhere
    message = str(caught.value)
    assert "failed in phase cleanup" in message and "no web container was stopped or removed" in message
    assert "todo-web-v1-abc123 (release v1, port %d)" % port_a in message
    assert "names port %d" % nowhere in message and "/health" in message
    assert "no release was live" not in message
    record = json.loads((tmp_path / "app" / "releases.jsonl").read_text().splitlines()[-1])
    assert record["failed_phase"] == "cleanup" and record["result"] == "failed"


def test_cleanup_still_removes_the_new_container_of_a_run_killed_before_its_switch(tmp_path, monkeypatch):
    """The first deploy was killed in health: its new container never served, so it is removed
    (not a reason to stop the run)."""
    port_a, port_b = _free_port(), _free_port()
    values = _options(tmp_path, [port_a, port_b], ["true"])
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "deploy.lock").write_text(json.dumps({"phase": "health", "new_container": "id-v1"}))
    docker = RecordingDocker([_web("v1", IMAGE_V1, port_a, values)], {})
    swap = Swap(options_from_dict(values), docker=docker)
    monkeypatch.setattr(phases_release, "wait_healthy", lambda run, container_id, port: {"status": 200, "release": "v2"})
    result = swap.run()
    assert ("remove", "id-v1") in docker.calls and result["cleaned"] == ["todo-web-v1-abc123"]