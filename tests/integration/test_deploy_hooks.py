"""playbooks/deploy.yml on this machine (connection local, the test bed's registry and Docker, a
private nginx) with the three hooks and a webhook received by a local receiver on 127.0.0.1: the
before hook runs first, a failing after_deploy hook is reported and the release stays live, the
webhook gets the Slack-compatible summary (and never shows its URL); a failed deploy runs the
after_failure hook, sends the summary and fails."""

from __future__ import annotations

import http.server
import json
import os
import threading

import pytest

from conftest import REPO, require_images, run_playbook

from ansible_collections.greenlight.deploy.plugins.module_utils._engine.schema import BY_NAME

pytestmark = pytest.mark.docker

REGISTRY = "127.0.0.1:%s" % os.environ.get("GREENLIGHT_REGISTRY_PORT", "5443")
DOCKER_CONFIG = REPO / ".testbed" / "docker-config"  # the test bed's registry login (root's)
TOKEN_PATH = "/services/T0000/B0000/webhook-token-d41d8cd9"


class Receiver(http.server.ThreadingHTTPServer):
    """Collects the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                receiver.bodies.append((self.path, self.headers.get("Content-Type"),
                                        json.loads(self.rfile.read(length))))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d%s" % (self.server_address[1], TOKEN_PATH)


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.shutdown()
    server.server_close()


def deploy_settings(app_host, nginx) -> dict:
    """The deploy_script_* / greenlight_* settings that make the engine options app_host uses."""
    settings = {}
    for name, value in app_host.options().items():
        setting = BY_NAME[name].setting if name in BY_NAME else None
        if setting and name not in ("app_name", "app_dir", "upstream_file", "env_file", "mounts"):
            settings[setting] = value
    settings.update({"greenlight_image_repository": "%s/greenlight/todo" % REGISTRY,
                     "deploy_script_docker_config": str(DOCKER_CONFIG), "deploy_script_proxy_url": nginx.url + "/health",
                     "greenlight_static_root": str(nginx.static_root)})
    return settings


def write_hooks(tmp_path):
    hooks = {}
    for point, tasks in {
        "before_deploy": "- name: Before\n  ansible.builtin.copy:\n    content: \"before {{ app_image_tag }}\"\n"
                         "    dest: %s/before.txt\n    mode: '0600'\n  delegate_to: localhost\n",
        "after_deploy": "- name: After\n  ansible.builtin.copy:\n"
                        "    content: \"{{ release_outcome.state }} {{ release_outcome.live }}\"\n"
                        "    dest: %s/after.txt\n    mode: '0600'\n  delegate_to: localhost\n"
                        "- name: Break\n  ansible.builtin.fail:\n    msg: the smoke test of the hook broke\n",
        "after_failure": "- name: Failure\n  ansible.builtin.copy:\n"
                         "    content: \"{{ release_outcome.state }} in {{ release_outcome.phase }}\"\n"
                         "    dest: %s/failure.txt\n    mode: '0600'\n  delegate_to: localhost\n",
    }.items():
        path = tmp_path / ("%s.yml" % point)
        path.write_text("---\n" + tasks % tmp_path)
        hooks["release_hook_" + point] = str(path)
    return hooks


def test_hooks_and_webhook_around_a_deploy_and_a_failed_one(app_host, nginx, receiver, tmp_path):
    require_images("v1")
    if not (DOCKER_CONFIG / "config.json").exists():
        pytest.fail("the test bed has no registry login in %s (testbed/registry.sh makes it)" % DOCKER_CONFIG)
    extra = dict(deploy_settings(app_host, nginx), **write_hooks(tmp_path), release_webhook_url=receiver.url)

    played = run_playbook("deploy.yml", app_host, json.dumps(dict(extra, app_image_tag="v1")))
    output = played.stdout + played.stderr
    assert played.returncode == 0, output
    assert nginx.get("/health") == (200, "v1")
    assert (tmp_path / "before.txt").read_text() == "before v1"
    assert (tmp_path / "after.txt").read_text() == "deployed v1"
    assert not (tmp_path / "failure.txt").exists()
    assert "the after_deploy hook failed" in output and "the smoke test of the hook broke" in output
    assert "the release stays live" in output
    assert TOKEN_PATH not in output and "webhook-token" not in output

    assert len(receiver.bodies) == 1
    path, content_type, body = receiver.bodies[0]
    assert path == TOKEN_PATH and content_type == "application/json"
    assert body["text"].startswith("deploy of %s" % app_host.app) and "localhost: DEPLOYED" in body["text"]
    server = body["greenlight"]["servers"]["localhost"]
    assert server["state"] == "deployed" and server["live"] == "v1"
    assert "the smoke test of the hook broke" in server["hook_failures"]["after_deploy"]

    # A deploy that fails (its health gate): after_failure runs, the webhook hears it, the play fails.
    require_images("bad-health")
    played = run_playbook("deploy.yml", app_host, json.dumps(dict(extra, app_image_tag="bad-health",
                                                                  deploy_script_health_timeout=3)))
    output = played.stdout + played.stderr
    assert played.returncode != 0, output
    assert nginx.get("/health") == (200, "v1")
    assert (tmp_path / "before.txt").read_text() == "before bad-health"
    assert (tmp_path / "after.txt").read_text() == "deployed v1"  # after_deploy did not run again
    assert (tmp_path / "failure.txt").read_text() == "failed in health"
    assert len(receiver.bodies) == 2
    failed = receiver.bodies[1][2]
    assert "localhost: FAILED in health" in failed["text"]
    assert failed["greenlight"]["servers"]["localhost"]["state"] == "failed"
    assert failed["greenlight"]["servers"]["localhost"]["live"] == "v1"
