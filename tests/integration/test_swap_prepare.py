"""Mode prepare on a real server (the test bed's Docker and registry): pull with the registry login,
noop once the release is live, fail fast on a held lock, a failed pull changes nothing."""

from __future__ import annotations

import os
import socket
import time

import pytest

from conftest import REPO, require_images, run_module

from ansible_collections.greenlight.deploy.plugins.module_utils._engine.errors import SwapError
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.lock import DeployLock
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.swap import run_swap

pytestmark = pytest.mark.docker

REGISTRY = "127.0.0.1:%s" % os.environ.get("GREENLIGHT_REGISTRY_PORT", "5443")
DOCKER_CONFIG = REPO / ".testbed" / "docker-config"  # the test bed's registry login (root's)


def _prepare(app_host, tag: str, **extra):
    return run_swap(app_host.options(image="%s/greenlight/todo:%s" % (REGISTRY, tag), mode="prepare",
                                     docker_config=str(DOCKER_CONFIG), **extra))


def test_prepare_pulls_then_says_noop_once_the_release_is_live(app_host):
    require_images("v1")
    if not (DOCKER_CONFIG / "config.json").exists():
        pytest.fail("the test bed has no registry login in %s (testbed/registry.sh makes it)" % DOCKER_CONFIG)
    first = _prepare(app_host, "v1")
    assert first["outcome"]["state"] == "prepared" and first["noop"] is False and first["live_release"] is None
    assert first["image_id"].startswith("sha256:") and first["image_digest"].startswith(REGISTRY)
    assert not app_host.releases_log.exists()  # prepare records nothing: it changed nothing
    deployed = run_swap(app_host.options(image="%s/greenlight/todo:v1" % REGISTRY))
    assert deployed["outcome"]["state"] == "deployed" and deployed["switched"] is True
    assert deployed["live_release"] == "v1" and deployed["outcome"]["live"] == "v1"
    again = _prepare(app_host, "v1")
    assert again["noop"] is True and again["changed"] is False and again["live_release"] == "v1"
    # through the module too: the same keys reach Ansible
    result = run_module(app_host.options(image="%s/greenlight/todo:v1" % REGISTRY, mode="prepare",
                                         docker_config=str(DOCKER_CONFIG)))
    assert result.get("failed") is not True and result["noop"] is True and result["outcome"]["state"] == "prepared"


def test_prepare_fails_fast_on_a_held_lock_and_a_failed_pull_changes_nothing(app_host):
    app_host.app_dir.mkdir(parents=True, exist_ok=True)
    holder = DeployLock(str(app_host.lock_file), {"pid": 777, "user": "ci", "release": "v9", "phase": "switch",
                                                  "since": "2026-01-01T00:00:00Z"})
    holder.acquire(1)
    started = time.monotonic()
    try:
        with pytest.raises(SwapError, match="pid 777 .*phase switch") as caught:
            _prepare(app_host, "v1", lock_timeout=30)
    finally:
        holder.release()
    assert time.monotonic() - started < 5
    assert caught.value.result["outcome"]["phase"] == "preflight"
    with pytest.raises(SwapError) as caught:
        _prepare(app_host, "no-such-tag")
    message = str(caught.value)
    assert message.startswith("docker pull %s/greenlight/todo:no-such-tag failed" % REGISTRY)
    assert message.endswith("Nothing was changed on %s." % socket.gethostname())
    assert caught.value.result["outcome"]["phase"] == "pull" and not app_host.releases_log.exists()
