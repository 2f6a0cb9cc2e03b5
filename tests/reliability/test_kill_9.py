"""Promise: kill -9 of a deploy in any phase leaves a release serving, the deploy lock free, and a
re-run converges.

tests/integration/test_swap_interrupt.py kills the engine in its long phases (pre_switch, health,
switch during a slow reload, drain). This test covers the others on a real server, through the
server-side front end of the same engine (/opt/todo/deploy.sh): a watcher on the server reads the
lock file in a tight loop and sends SIGKILL to the holder (its pid is in the lock file) the
moment the wanted phase is written there, so even phases of a few milliseconds are hit (or the
instant right after them). The runs form a chain, each starting from what the previous kill left
(A = the release live at the start, B = the other one):

    deploy B, killed in lock, then snapshot, cleanup, static, start, health
    deploy A (live: only the leftover of B to clean up, then prune) killed in prune
    deploy B killed in health; deploy A killed in record; deploy A again: converges (A live)
    deploy B, its background stop of A killed in stop_old (deploy.sh answered before); deploy B
    again: converges (B live, A stopped and kept)

The kills in health only prepare the next run (a leftover container running beside the live one
makes the re-run of the live release go through cleanup, prune and record without a swap).
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

# The order the lock file shows them through deploy.sh: the old release is stopped by a detached
# child after prune (phase stop_old, the child's pid) while the deploy records and returns.
PHASES = ["plan", "lock", "cleanup", "snapshot", "pre_switch", "static", "start", "health", "switch", "drain",
          "services", "prune", "stop_old", "record"]
WATCHER = r"""
import json, os, signal, sys, time
path, phases, target = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
try:  # what an earlier (killed) holder left there is not the deploy to kill
    stale = json.loads(open(path).read() or "null") or {}
except (OSError, ValueError):
    stale = {}
print("ready", flush=True)
deadline = time.monotonic() + 300
while time.monotonic() < deadline:
    try:
        with open(path) as handle:
            data = json.loads(handle.read() or "null")
    except (OSError, ValueError):
        continue  # the holder is rewriting it
    finally:
        time.sleep(0.0003)
    # The first sight of the target phase or a later one (a phase of a few ms may pass unseen).
    if isinstance(data, dict) and not data.get("released") and data.get("phase") in phases \
            and phases.index(data["phase"]) >= phases.index(target) \
            and (data.get("pid"), data.get("since")) != (stale.get("pid"), stale.get("since")):
        os.kill(int(data["pid"]), signal.SIGKILL)
        print(json.dumps(data), flush=True)
        sys.exit(0)
sys.exit(3)
"""


def deploy_killed_in(server: Server, release: str, phase: str, attempts: int = 3) -> dict[str, t.Any]:
    """deploy.sh <release>, killed by a watcher (at nice -20, so it is scheduled in time) when the
    lock file shows `phase`; tried again when the kill landed in a later phase."""
    for _attempt in range(attempts):
        watcher = subprocess.Popen(["docker", "exec", server.name, "nice", "-n", "-20", "python3", "-c", WATCHER,
                                    LOCK_FILE, ",".join(PHASES), phase],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert watcher.stdout is not None and watcher.stdout.readline().strip() == "ready"
            deploy = server.sh("/opt/todo/deploy.sh %s" % release, check=False, timeout=180)
            try:
                out, _err = watcher.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                out = ""
        finally:
            if watcher.poll() is None:
                watcher.kill()
                watcher.wait()
        assert watcher.returncode == 0 and out.strip(), (
            "deploy.sh %s ended (exit %d) without reaching phase %s:\n%s%s" % (
                release, deploy.returncode, phase, deploy.stdout[-2000:], deploy.stderr[-2000:]))
        if phase == "stop_old":  # the background child was killed: deploy.sh had already answered
            assert deploy.returncode == 0 and "stopping in the background" in deploy.stdout, deploy.stderr[-2000:]
        else:
            assert deploy.returncode != 0, "deploy.sh finished although it was killed"
        holder = json.loads(out.strip().splitlines()[-1])
        if holder["phase"] == phase:
            return holder
        assert server.lock_is_free() and server.live_release() is not None
    raise AssertionError("%d kills aimed at phase %s all landed later (last: %s)" % (attempts, phase, holder["phase"]))


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
    chain = [(second, phase) for phase in ("lock", "snapshot", "cleanup", "static", "start", "health")]
    chain += [(first, "prune"), (second, "health"), (first, "record"), ("converge", first)]
    chain += [(second, "stop_old"), ("converge", second)]
    killed = []
    records_before = len(server.audit_lines())
    load = LoadGenerator(server.port, threads=4, max_seconds=600, max_requests=200000).start()
    try:
        for release, phase in chain:
            if release == "converge":
                assert_converged(server, phase)
                continue
            # A retry needs the same starting point: only the kills before any container exists retry.
            holder = deploy_killed_in(server, release, phase, attempts=3 if phase in ("lock", "cleanup", "snapshot") else 1)
            killed.append(holder["phase"])
            assert server.lock_is_free(), "the lock is held after the holder was killed in %s" % phase
            assert server.live_release() in (first, second), "nothing serves after a kill in %s" % phase
        time.sleep(0.5)
    finally:
        load.stop()
    summary = load.summary()
    assert summary["requests"] > 100 and load.failures == [], summary
    assert killed == [phase for release, phase in chain if release != "converge"]
    # Killed runs write no audit line; every run that finished (the re-runs) succeeded.
    failed = [r for r in server.audit_lines()[records_before:] if r["result"] != "ok"]
    assert failed == [], failed
