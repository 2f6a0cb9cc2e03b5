"""The old release is stopped in the background (the front ends: container_swap, deploy.sh): the
deploy returns once traffic has left it, a detached child holds the deploy lock until it is
stopped, a deploy started right away waits for that child and succeeds, and a kill -9 of the
child mid-stop leaves a state the next deploy cleans up."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from conftest import image, lock_holder, lock_is_free, require_images, run_module

from ansible_collections.greenlight.deploy.plugins.module_utils._engine.swap import run_swap

pytestmark = pytest.mark.docker


def _webs(app_host) -> dict[str, str]:
    return {c["Labels"]["greenlight.release"]: c["State"] for c in app_host.containers()
            if c["Labels"]["greenlight.service"] == "web"}


def _wait_lock_free(app_host, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not lock_is_free(app_host.lock_file):
        assert time.monotonic() < deadline, "the background stop still holds the lock: %s" % lock_holder(
            app_host.lock_file)
        time.sleep(0.05)


def test_deploy_returns_before_the_old_release_stopped_and_the_next_deploy_waits(app_host, nginx):
    require_images("v1", "v2")
    fast = {"pre_switch_commands": [], "static_source": None, "static_root": None, "lock_timeout": 1}
    run_swap(app_host.options(image=image("v1")))  # migrates the database once
    second = run_module(app_host.options(image=image("v2"), **fast))
    holder = lock_holder(app_host.lock_file)
    assert second.get("failed") is not True, second.get("msg")
    stopping = second["stopping_old"]
    assert stopping["release"] == "v1" and stopping["container"].startswith("%s-web-v1-" % app_host.app)
    assert stopping["pid"] != os.getpid() and stopping["removed_after"] is False
    assert "stop_old" not in second["phases"] and second["switched"] is True and second["live_release"] == "v2"
    assert app_host.audit_lines()[-1]["stopping_old"] == stopping  # the record says it is being stopped
    print("module phases:", second["phases"], "lock right after the module returned:", holder)
    # A deploy started right away (lock_timeout 1 s) waits for the background stop, then succeeds.
    third = run_swap(app_host.options(image=image("v1"), release="v1-again", **fast), background_stop=True)
    assert third["outcome"]["state"] == "deployed" and nginx.get("/health") == (200, "v1")
    assert "recovered_from" not in third  # the child released the lock cleanly
    _wait_lock_free(app_host)
    assert _webs(app_host) == {"v1": "exited", "v2": "exited", "v1-again": "running"}
    assert lock_holder(app_host.lock_file)["released"] is True


def test_kill_9_of_the_background_stop_is_cleaned_up_by_the_next_deploy(app_host, nginx):
    require_images("v1", "v2")
    fast = {"pre_switch_commands": [], "static_source": None, "static_root": None}
    run_swap(app_host.options(image=image("v1")))  # migrates the database once
    killed: list[dict] = []

    def watch() -> None:  # kill the child the moment it names itself in the lock file
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            holder = lock_holder(app_host.lock_file) or {}
            if holder.get("phase") == "stop_old" and not holder.get("released"):
                os.kill(int(holder["pid"]), signal.SIGKILL)
                killed.append(holder)
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    result = run_swap(app_host.options(image=image("v2"), **fast), background_stop=True)
    watcher.join()
    assert killed and killed[0]["pid"] == result["stopping_old"]["pid"]
    # SIGKILL is delivered asynchronously: the kernel drops the child's flock when it has exited.
    _wait_lock_free(app_host, timeout=5)
    assert nginx.get("/health") == (200, "v2")
    assert lock_holder(app_host.lock_file)["phase"] == "stop_old"  # not released: an interrupted run
    # The next deploy finds what the killed child left (v1 running or stopped) and converges.
    again = run_swap(app_host.options(image=image("v1"), release="v1-again", **fast), background_stop=True)
    assert again["recovered_from"]["phase"] == "stop_old" and again["recovered_from"]["pid"] == killed[0]["pid"]
    assert nginx.get("/health") == (200, "v1")
    _wait_lock_free(app_host)
    assert _webs(app_host) == {"v1": "exited", "v2": "exited", "v1-again": "running"}  # kept for rollback
