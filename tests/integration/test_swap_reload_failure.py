"""A real nginx that cannot be reloaded (pid file lost, or master gone) during a deploy, then a
re-deploy under load: never an outage, the old release kept as the rollback target."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from conftest import LoadGenerator, image, require_images

from ansible_collections.greenlight.deploy.plugins.module_utils._engine.errors import SwapError
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.swap import run_swap

pytestmark = pytest.mark.docker


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def _break_nginx(nginx, how: str) -> Path:
    """Make `nginx -s reload` fail. pid_file_lost: the master still serves the old config;
    master_gone: nginx crashed, nothing listens."""
    pid_file = nginx.prefix / "nginx.pid"
    saved = nginx.prefix / "nginx.pid.saved"
    pid = int(pid_file.read_text())
    if how == "pid_file_lost":
        pid_file.rename(saved)
    else:
        workers = _children(pid)
        os.kill(pid, signal.SIGKILL)
        for worker in workers:
            try:
                os.kill(worker, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while any(os.path.exists("/proc/%d" % p) for p in [pid] + workers) and time.monotonic() < deadline:
            time.sleep(0.05)
    return saved


def _web_states(app_host) -> dict[str, str]:
    return {c["Labels"]["greenlight.release"]: c["State"] for c in app_host.containers()
            if c["Labels"]["greenlight.service"] == "web"}


@pytest.fixture
def nginx_restore(nginx):
    """Callables run before the nginx fixture's teardown (which needs the pid file)."""
    callbacks: list = []
    yield callbacks
    for callback in callbacks:
        callback()


@pytest.mark.parametrize("how", ["pid_file_lost", "master_gone"])
def test_failed_reload_then_redeploy_under_load(app_host, nginx, nginx_restore, how):
    require_images("v1", "v2")
    run_swap(app_host.options(image=image("v1")))
    nginx.wait_release("v1")
    v1_port = nginx.upstream_port()
    saved = _break_nginx(nginx, how)
    # Should an assertion below fail first, give the pid file back so the fixture stops nginx.
    nginx_restore.append(lambda: saved.exists() and saved.rename(nginx.prefix / "nginx.pid"))

    with pytest.raises(SwapError) as caught:
        run_swap(app_host.options(image=image("v2")))
    message = str(caught.value)
    print("failed deploy (%s): %s" % (how, message))
    assert "failed in phase switch" in message
    assert "could not be reloaded" in message and "kept running" in message
    assert "still serving" not in message
    # The upstream file names the release nginx was serving, not the new one.
    assert nginx.upstream_port() == v1_port
    assert caught.value.result["proxy_uncertain"] is True
    assert _web_states(app_host) == {"v1": "running", "v2": "running"}
    if how == "pid_file_lost":
        assert nginx.get("/health") == (200, "v1")  # the master never reloaded: v1 still serves
        saved.rename(nginx.prefix / "nginx.pid")  # the operator repairs nginx
    else:
        nginx.start()  # the operator restarts nginx: it reads the upstream file, which names v1
        nginx.wait_release("v1")

    load = LoadGenerator(nginx.port, threads=4, max_seconds=150).start()
    try:
        time.sleep(0.5)
        result = run_swap(app_host.options(image=image("v2"), release="v2-again"))
        done = time.monotonic()
        time.sleep(0.5)
    finally:
        load.stop()
    summary = load.summary()
    print("re-deploy after %s: load %s; cleaned %s; phases %s" % (how, summary, result.get("cleaned"),
                                                                   result["phases"]))
    assert load.failures == [], summary
    assert result["release"] == "v2-again" and result["previous_release"] == "v1"
    assert nginx.get("/health") == (200, "v2")
    assert [r for r in load.results if r[0] > done and r[2] != "v2"] == []
    assert _web_states(app_host) == {"v1": "exited", "v2-again": "running"}  # v1 kept for rollback


def test_upstream_naming_a_removed_container_is_adopted_under_load(app_host, nginx):
    """The state a failed reload used to leave behind: the upstream file names the port of a
    container that was removed, nginx still routes to v1. The next deploy adopts v1 (it used
    to stop and remove it: an outage until v2 was healthy, and no rollback target)."""
    require_images("v1", "v2")
    run_swap(app_host.options(image=image("v1")))
    nginx.wait_release("v1")
    v1_port = nginx.upstream_port()
    other_port = [port for port in app_host.host_ports if port != v1_port][0]
    nginx.upstream_file.write_text("server 127.0.0.1:%d;\n" % other_port)  # renamed in, never reloaded

    load = LoadGenerator(nginx.port, threads=4, max_seconds=150).start()
    try:
        time.sleep(0.5)
        result = run_swap(app_host.options(image=image("v2")))
        done = time.monotonic()
        time.sleep(0.5)
    finally:
        load.stop()
    summary = load.summary()
    print("re-deploy with an upstream file naming nothing: load %s; adopted %s" % (summary, result.get("adopted")))
    assert load.failures == [], summary
    assert result["adopted"]["release"] == "v1" and result["adopted"]["port"] == v1_port
    assert result["adopted"]["upstream_port_before"] == other_port
    assert result["release"] == "v2" and result["previous_release"] == "v1"
    assert nginx.get("/health") == (200, "v2")
    assert [r for r in load.results if r[0] > done and r[2] != "v2"] == []
    assert _web_states(app_host) == {"v1": "exited", "v2": "running"}
    line = app_host.audit_lines()[-1]
    assert line["result"] == "ok" and line.get("adopted", {}).get("release") == "v1"
