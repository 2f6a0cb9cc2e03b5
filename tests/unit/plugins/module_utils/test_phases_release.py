"""phases_release.py on its own: pre_switch, static is covered by test_swap_owner, start, health."""

from __future__ import annotations

import http.server
import threading

import pytest
from engine_fakes import IMAGE_V2, FakeDocker, make_run

from ansible_collections.greenlight.deploy.plugins.module_utils._engine import phases_release
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.errors import SwapError
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.plan import Plan


def _plan(**extra):
    values = {"release": "v2", "image": "todo:v2", "image_id": IMAGE_V2, "web_hash": "h" * 16, "web_change": True,
              "new_port": 18002}
    values.update(extra)
    return Plan(**values)


def test_pre_switch_runs_each_command_in_a_one_off_container_and_removes_it(tmp_path):
    docker = FakeDocker(logs="migrated\n")
    run = make_run(tmp_path, docker, pre_switch_commands=["manage.py migrate", ["true"]])
    phases_release.pre_switch(run, _plan())
    assert run.result["pre_switch_output"] == ["migrated", "migrated"] and run.pre_switch_started
    assert [verb for verb, _id in docker.calls] == ["create", "start", "remove"] * 2
    assert docker.containers == [] and run.one_off == []


def test_pre_switch_failure_says_the_exit_code_and_output_and_removes_the_container(tmp_path):
    docker = FakeDocker(exit_codes={"pre-switch": 2}, logs="no such table\n")
    run = make_run(tmp_path, docker, pre_switch_commands=["manage.py migrate"])
    with pytest.raises(SwapError, match="exited 2; last output:\nno such table"):
        phases_release.pre_switch(run, _plan())
    assert docker.containers == [] and run.one_off == []


def test_start_binds_the_new_port_on_loopback_and_names_the_container_in_the_lock(tmp_path):
    docker = FakeDocker()
    run = make_run(tmp_path, docker)

    class Lock:
        info: dict = {}

        def update(self, **fields):
            self.info.update(fields)

    run.lock = Lock()
    phases_release.start(run, _plan())
    container = docker.containers[0]
    config = container["Config"]
    assert container["State"] == "running" and run.new_container == container["Id"]
    assert config["HostConfig"]["PortBindings"] == {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18002"}]}
    assert container["Labels"]["greenlight.port"] == "18002" and container["Labels"]["greenlight.release"] == "v2"
    assert run.lock.info["new_container"] == container["Id"] and run.result["container_id"] == container["Id"]


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("X-Release", "v2")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_health_returns_the_release_the_new_container_answers_with(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        docker = FakeDocker()
        run = make_run(tmp_path, docker)
        run.new_container = docker.create_container("todo-web-v2", {"Image": IMAGE_V2, "Labels": {}})
        docker.start_container(run.new_container)
        answer = phases_release.health(run, _plan(new_port=server.server_address[1]))
    finally:
        server.shutdown()
    assert answer == {"status": 200, "release": "v2"} and run.result["health_release"] == "v2"
    assert run.result["health_attempts"] == 1


def test_health_fails_at_once_when_the_new_container_exits(tmp_path):
    docker = FakeDocker(logs="boom\n")
    run = make_run(tmp_path, docker, health_timeout=30)
    run.new_container = docker.create_container("todo-web-v2", {"Image": IMAGE_V2, "Labels": {}})  # never started
    with pytest.raises(SwapError, match=r"exited \(code 3\) before it became healthy; last log lines:\nboom"):
        phases_release.health(run, _plan(new_port=1))
