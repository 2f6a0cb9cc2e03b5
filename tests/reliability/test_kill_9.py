"""Promise: kill -9 of a deploy in any phase leaves a release serving, the deploy lock free, and a
re-run converges.

tests/integration/test_swap_interrupt.py kills the engine in its long phases (pre_switch, health,
switch during a slow reload, drain). This test covers the others on a real server, through the
server-side front end of the same engine (/opt/todo/deploy.sh): a watcher on the server reads the
lock file in a tight loop and sends SIGKILL to the holder (its pid is in the lock file) the
moment the wanted phase is written there, so even phases of a few milliseconds are hit (or the
instant right after them). The runs form a chain, each starting from what the previous kill left:

    v1 live -> deploy v2, killed in lock, snapshot, cleanup, static, start, then stop_old
            -> deploy v2 again: converges (v2 live, nothing left over)
            -> deploy v1, killed in prune -> again: converges
            -> deploy v2, killed in record -> again: converges

Not covered: plan (before the lock: nothing written yet) and services (none configured here, the
phase lasts microseconds).
"""

from __future__ import annotations

import json
import subprocess
import time
import typing as t

import pytest

from server_under_test import LOCK_FILE, LoadGenerator, Server

pytestmark = pytest.mark.docker

WATCHER = r"""
import json, os, signal, sys, time
path, phase, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
print("ready", flush=True)
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    try:
        with open(path) as handle:
            data = json.loads(handle.read() or "null")
    except (OSError, ValueError):
        continue  # the holder is rewriting it
    if isinstance(data, dict) and not data.get("released") and data.get("phase") == phase:
        os.kill(int(data["pid"]), signal.SIGKILL)
        print(json.dumps(data), flush=True)
        sys.exit(0)
sys.exit(3)
"""


def deploy_killed_in(server: Server, release: str, phase: str) -> dict[str, t.Any]:
    """deploy.sh <release> with a watcher that kills it when the lock file shows `phase`."""
    watcher = subprocess.Popen(["docker", "exec", server.name, "python3", "-c", WATCHER, LOCK_FILE, phase, "120"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert watcher.stdout is not None and watcher.stdout.readline().strip() == "ready"
        deploy = server.sh("/opt/todo/deploy.sh %s" % release, check=False, timeout=180)
        out, err = watcher.communicate(timeout=30)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert watcher.returncode == 0, "the deploy never showed phase %s (deploy.sh exit %d):\n%s%s" % (
        phase, deploy.returncode, deploy.stdout[-2000:], deploy.stderr[-2000:])
    assert deploy.returncode != 0, "deploy.sh finished although it was killed in %s" % phase
    return json.loads(out.strip().splitlines()[-1])


def assert_converged(server: Server, release: str) -> None:
    again = server.sh("/opt/todo/deploy.sh %s" % release, check=False, timeout=180)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    server.wait_release(release)
    containers = server.containers()
    assert [c["release"] for c in containers if c["service"] == "web" and c["state"] == "running"] == [release]
    assert not [c for c in containers if c["service"] in ("pre-switch", "static")], containers
    assert server.lock_is_free()


def test_kill_9_in_any_phase_keeps_a_release_serving_and_a_rerun_converges(settled: Server) -> None:
    server = settled
    first = server.live_release()
    second = "v1" if first == "v2" else "v2"
    chain = [(second, phase) for phase in ("lock", "snapshot", "cleanup", "static", "start", "stop_old")]
    chain += [("converge", second), (first, "prune"), ("converge", first), (second, "record"), ("converge", second)]
    killed = []
    records_before = len(server.audit_lines())
    load = LoadGenerator(server.port, threads=4, max_seconds=600, max_requests=200000).start()
    try:
        for release, phase in chain:
            if release == "converge":
                assert_converged(server, phase)
                continue
            holder = deploy_killed_in(server, release, phase)
            killed.append((phase, holder.get("phase")))
            assert server.lock_is_free(), "the lock is held after the holder was killed in %s" % phase
            assert server.live_release() in (first, second), "nothing serves after a kill in %s" % phase
        time.sleep(0.5)
    finally:
        load.stop()
    summary = load.summary()
    assert summary["requests"] > 100 and load.failures == [], summary
    assert [phase for phase, _seen in killed] == [phase for release, phase in chain if release != "converge"]
    # Killed runs write no audit line; every run that finished (the re-runs) succeeded.
    failed = [r for r in server.audit_lines()[records_before:] if r["result"] != "ok"]
    assert failed == [], failed
