"""Concurrent deploys and kill -9 of a deploy in each phase."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import stat
import time

import pytest

from conftest import (
    LoadGenerator,
    image,
    lock_holder,
    lock_is_free,
    require_images,
    start_engine_process,
    wait_for_phase,
)

from ansible_collections.greenlight.deploy.plugins.module_utils._engine.errors import LockTimeout, SwapError
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.swap import run_swap

SLOW_COMMAND = ["python", "-c", "import time; time.sleep(3)"]

pytestmark = pytest.mark.docker


def test_two_deploys_at_once(app_host, nginx):
    """Test 6: one proceeds, the other fails within the lock timeout naming the holder."""
    require_images("v1", "v2")
    run_swap(app_host.options(image=image("v1")))
    slow = app_host.options(image=image("v2"), pre_switch_commands=[SLOW_COMMAND])
    first = start_engine_process(slow)
    try:
        holder = wait_for_phase(app_host.lock_file, "pre_switch", pid=first.pid)
        started = time.monotonic()
        with pytest.raises(SwapError) as caught:
            run_swap(app_host.options(image=image("v2"), release="v2-other", lock_timeout=1))
        waited = time.monotonic() - started
        output = first.communicate(timeout=120)[0]
    finally:
        if first.poll() is None:
            first.kill()
    assert isinstance(caught.value, LockTimeout) or "another deploy holds" in str(caught.value)
    message = str(caught.value)
    assert 1 <= waited < 5, waited
    assert "pid %d" % first.pid in message and "release v2" in message and "phase pre_switch" in message
    assert holder["user"] in message and holder["since"] in message
    assert first.returncode == 0, output
    assert json.loads(output)["release"] == "v2"
    assert nginx.get("/health") == (200, "v2")
    blocked = [line for line in app_host.audit_lines() if line["release"] == "v2-other"]
    assert len(blocked) == 1 and blocked[0]["failed_phase"] == "lock"


def write_slow_reload(path, real_reload: list[str], seconds: float) -> list[str]:
    """A reload wrapper that sleeps first, so the switch phase is long enough to kill in it."""
    path.write_text("#!/bin/sh\nsleep %s\nexec %s\n" % (seconds, " ".join(real_reload)))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return [str(path)]


@pytest.mark.parametrize("phase", ["pre_switch", "health", "switch", "drain"])
def test_kill_9_in_phase_then_rerun_converges(app_host, nginx, tmp_path, phase):
    """Test 7: kill -9 of a deploy in a phase; the app keeps answering, the lock is free, a
    re-run converges to the requested release."""
    require_images("v1", "v2")
    reload_command = write_slow_reload(tmp_path / "slow-reload.sh", nginx.reload_command, 1.5)
    base = dict(proxy_reload_command=reload_command, drain_seconds=6, stop_grace_seconds=2)
    run_swap(app_host.options(image=image("v1"), **base))
    nginx.wait_release("v1")
    target = app_host.options(image=image("v2"), release="v2-%s" % phase,
                              pre_switch_commands=["python manage.py migrate --noinput", SLOW_COMMAND], **base)

    killed = dict(target)
    if phase == "health":
        # A healthy app passes its gate in well under a second, too short to land a kill in
        # reliably; a path that never answers 200 keeps the run in the health phase until killed.
        killed["health_path"] = "/never-healthy"

    background = concurrent.futures.ThreadPoolExecutor(1)
    load = LoadGenerator(nginx.port, threads=4, max_seconds=150).start()
    try:
        process = start_engine_process(killed)
        slow = None
        try:
            if phase == "drain":
                # The drain ends once nginx holds no connection to the old release: a request in
                # flight on it keeps the run in the drain long enough to be killed there.
                wait_for_phase(app_host.lock_file, "health", pid=process.pid)
                slow = background.submit(nginx.get, "/slow/?seconds=8", 30)  # outlasts health + switch under load
            holder = wait_for_phase(app_host.lock_file, phase, pid=process.pid)
            time.sleep(0.5)  # well inside the phase
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
        finally:
            if process.poll() is None:
                process.kill()
            process.communicate()
        assert process.returncode == -signal.SIGKILL
        if slow is not None:
            assert slow.result(timeout=30) == (200, "v1")  # answered by the old release, which was not stopped
        assert holder["release"] == "v2-%s" % phase
        assert lock_is_free(app_host.lock_file)
        # Still serving, and nothing blocks the next run.
        status, release = nginx.get("/health")
        assert status == 200 and release in ("v1", "v2")
        killed_at = time.monotonic()

        result = run_swap(target)
        rerun_done = time.monotonic()
        time.sleep(0.5)
    finally:
        load.stop()
        background.shutdown(wait=True)
    summary = load.summary()
    print("kill -9 in %s: load %s; re-run phases %s; recovered_from %s; cleaned %s" % (
        phase, summary, result["phases"], result.get("recovered_from"), result.get("cleaned")))
    assert load.failures == [], summary
    assert result["release"] == "v2-%s" % phase
    assert result.get("recovered_from", {}).get("phase") == phase
    assert nginx.get("/health") == (200, "v2")
    assert nginx.upstream_port() == result["live_port"]
    running = app_host.running_web()
    assert [c["Labels"]["greenlight.release"] for c in running] == ["v2-%s" % phase]
    assert not [c for c in app_host.containers() if c["Labels"]["greenlight.service"] in ("pre-switch", "static")]
    assert [r for r in load.results if r[0] > rerun_done and r[2] != "v2"] == []
    assert killed_at < rerun_done
    assert lock_holder(app_host.lock_file)["released"] is True
    # The converged state is stable: one more run changes nothing.
    assert run_swap(target)["changed"] is False
