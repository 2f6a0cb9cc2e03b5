"""phases_traffic.py on its own: switch (and switch back), drain, stop_old."""

from __future__ import annotations

import os
import threading
import time

import pytest
from engine_fakes import IMAGE_V1, FakeDocker, make_run, options, web

from ansible_collections.greenlight.deploy.plugins.module_utils._engine import phases_traffic
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.audit import append_jsonl, read_records
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.docker_api import DockerError
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.errors import LockTimeout, SwapError
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.lock import DeployLock, lock_holder
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.plan import Plan


def _plan(values, **extra):
    live = web(values, "v1", IMAGE_V1, 18001)
    fields = {"release": "v2", "live": live, "pointed": live, "upstream_port": 18001, "live_port": 18001,
              "new_port": 18002, "previous_release": "v1"}
    fields.update(extra)
    return Plan(**fields), live


def test_switch_points_the_upstream_at_the_new_port(tmp_path):
    (tmp_path / "todo-upstream.conf").write_text("server 127.0.0.1:18001;\n")
    run = make_run(tmp_path, FakeDocker())
    plan, _live = _plan(options(tmp_path))
    phases_traffic.switch(run, plan, {"status": 200, "release": "v2"})
    assert (tmp_path / "todo-upstream.conf").read_text() == "server 127.0.0.1:18002;\n"
    assert run.switched and run.ever_switched and run.result["live_port"] == 18002


def test_a_failed_verify_switches_back_to_the_previous_release(tmp_path):
    (tmp_path / "todo-upstream.conf").write_text("server 127.0.0.1:18001;\n")
    values = options(tmp_path, proxy_verify_url="http://127.0.0.1:1/health", proxy_verify_timeout=0.3)
    plan, live = _plan(values)
    run = make_run(tmp_path, FakeDocker([live]), proxy_verify_url="http://127.0.0.1:1/health",
                   proxy_verify_timeout=0.3)
    with pytest.raises(SwapError, match="switched the proxy back to the previous release"):
        phases_traffic.switch(run, plan, {"status": 200, "release": "v2"})
    assert (tmp_path / "todo-upstream.conf").read_text() == "server 127.0.0.1:18001;\n"
    assert not run.switched and run.ever_switched
    assert run.result["rolled_back"] is True and run.result["live_port"] == 18001


def test_drain_waits_the_fixed_time_when_not_until_idle(tmp_path):
    run = make_run(tmp_path, FakeDocker(), drain_until_idle=False, drain_seconds=0)
    plan, _live = _plan(options(tmp_path))
    phases_traffic.drain(run, plan)
    assert run.result["drain"] == {"seconds": 0, "idle": None}


def test_stop_old_stops_the_previous_release_and_keeps_it(tmp_path):
    plan, live = _plan(options(tmp_path))
    docker = FakeDocker([live])
    phases_traffic.stop_old(make_run(tmp_path, docker), plan)
    assert docker.calls == [("stop", "id-web-v1")] and docker.containers[0]["State"] == "exited"


# -- stop_old in the background (the front ends) -------------------------------------------------
class SlowStopDocker(FakeDocker):
    """stop_container blocks until the test creates `go`, then notes the stop in `stopped`
    (the child is another process: the in-memory fake of the parent never sees its calls)."""

    def __init__(self, containers, go, stopped):
        super().__init__(containers)
        self.go, self.stopped = go, stopped

    def stop_container(self, container_id, grace):
        deadline = time.monotonic() + 20
        while not self.go.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        self.stopped.write_text("%s %d\n" % (container_id, os.getpid()))


def _wait(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met within %ss" % timeout)


def test_stop_old_in_background_returns_while_the_child_holds_the_lock_until_stopped(tmp_path):
    plan, live = _plan(options(tmp_path))
    go, stopped = tmp_path / "go", tmp_path / "stopped"
    run = make_run(tmp_path, SlowStopDocker([live], go, stopped))
    lock_file = run.opts.lock_file
    run.lock = DeployLock(lock_file, dict(run.actor, app="todo", release="v2", phase="prune", old_container="id-web-v1"))
    run.lock.acquire(1)
    started = time.monotonic()
    stopping = phases_traffic.stop_old_in_background(run, plan)
    assert time.monotonic() - started < 2
    assert stopping["container"] == "todo-web-v1-abc123" and stopping["release"] == "v1"
    assert stopping["pid"] != os.getpid() and run.lock is None
    # The stop has not ended: the lock is held by the child, in phase stop_old, with its pid.
    holder = lock_holder(lock_file)
    assert holder["phase"] == "stop_old" and holder["pid"] == stopping["pid"]
    assert holder["old_container"] == "id-web-v1" and not stopped.exists()
    with pytest.raises(LockTimeout, match="phase stop_old"):
        DeployLock(lock_file, {"pid": os.getpid()}).acquire(0.3)
    go.write_text("")
    _wait(stopped.exists)
    # Stopped, but the deploy has not written its audit record yet: the child keeps the lock.
    time.sleep(0.3)
    assert lock_holder(lock_file)["phase"] == "stop_old"
    run.recorded()
    _wait(lambda: lock_holder(lock_file) is None)
    assert stopped.read_text().split() == ["id-web-v1", str(stopping["pid"])]
    assert DeployLock.read_holder(lock_file)["released"] is True


def test_the_next_deploy_waits_for_the_background_stop_instead_of_failing(tmp_path):
    plan, live = _plan(options(tmp_path))
    go, stopped = tmp_path / "go", tmp_path / "stopped"
    run = make_run(tmp_path, SlowStopDocker([live], go, stopped))
    run.lock = DeployLock(run.opts.lock_file, dict(run.actor, phase="prune"))
    run.lock.acquire(1)
    phases_traffic.stop_old_in_background(run, plan)
    run.recorded()
    threading.Timer(1.0, go.write_text, args=("",)).start()
    nxt = DeployLock(run.opts.lock_file, {"pid": os.getpid(), "phase": "lock"})
    nxt.acquire(0.2, background_wait=10)  # lock_timeout 0.2 s, yet it waits for the stop
    try:
        assert stopped.exists() and nxt.previous is None  # released cleanly by the child
    finally:
        nxt.release()


def test_a_failed_background_stop_is_recorded_and_frees_the_lock(tmp_path):
    plan, live = _plan(options(tmp_path))

    class Refusing(FakeDocker):
        def stop_container(self, container_id, grace):
            raise DockerError("daemon says no")

    run = make_run(tmp_path, Refusing([live]))
    run.lock = DeployLock(run.opts.lock_file, dict(run.actor, phase="prune"))
    run.lock.acquire(1)
    stopping = phases_traffic.stop_old_in_background(run, plan)
    # The deploy's own line comes first: the child writes its failure only after it.
    append_jsonl(run.opts.releases_log, {"action": "deploy", "result": "ok"})
    run.recorded()
    _wait(lambda: lock_holder(run.opts.lock_file) is None)
    _wait(lambda: len(read_records(run.opts.releases_log)) == 2)
    first, record = read_records(run.opts.releases_log)
    assert first["action"] == "deploy"
    assert record["action"] == "stop_old" and record["result"] == "failed"
    assert record["actor"]["pid"] == stopping["pid"] and "daemon says no" in record["error"]
    # Not marked as ended: the next run sees an interrupted run naming the old container, and its
    # cleanup keeps that release (it is the rollback target) instead of removing a "leftover".
    nxt = DeployLock(run.opts.lock_file, {"pid": os.getpid(), "phase": "lock"})
    nxt.acquire(1)
    try:
        assert nxt.previous is not None and nxt.previous["phase"] == "stop_old"
        assert nxt.previous["stopping"] == "todo-web-v1-abc123"
    finally:
        nxt.release()


def test_a_deploy_that_dies_before_its_record_leaves_an_interrupted_run(tmp_path):
    # The deploy was killed between handing the lock over and writing its audit line: the child
    # stops the old release, then lets the lock go as an interrupted run's (recovered_from next).
    plan, live = _plan(options(tmp_path))
    go, stopped = tmp_path / "go", tmp_path / "stopped"
    go.write_text("")
    run = make_run(tmp_path, SlowStopDocker([live], go, stopped))
    run.lock = DeployLock(run.opts.lock_file, dict(run.actor, phase="prune", old_container="id-web-v1"))
    run.lock.acquire(1)
    phases_traffic.stop_old_in_background(run, plan)
    run.recorded(False)  # what a dying deploy's closed pipe amounts to
    _wait(lambda: lock_holder(run.opts.lock_file) is None)
    assert stopped.exists()
    holder = DeployLock.read_holder(run.opts.lock_file)
    assert not holder.get("released") and holder["phase"] == "stop_old"


def test_a_holder_that_wrote_released_is_waited_for_not_reported(tmp_path):
    # release() writes "released" (phase done), then unlocks: a run that looks in between must
    # wait the moment it takes instead of failing on "another deploy holds ... phase done".
    lock_file = str(tmp_path / "deploy.lock")
    first = DeployLock(lock_file, {"pid": os.getpid(), "phase": "record"})
    first.acquire(1)
    first.info.update(released=True, phase="done")
    first._write()
    threading.Timer(0.5, first.abandon).start()
    nxt = DeployLock(lock_file, {"pid": os.getpid(), "phase": "lock"})
    nxt.acquire(0.1)  # lock_timeout shorter than the unlock: still no LockTimeout
    nxt.release()


def test_read_records_limit_zero_reads_none_and_none_reads_all(tmp_path):
    # deploy.sh status --last 0 (what rotate_secrets asks) must not ship the whole audit log.
    log = str(tmp_path / "releases.jsonl")
    for number in range(3):
        append_jsonl(log, {"n": number})
    assert read_records(log, limit=0) == []
    assert [r["n"] for r in read_records(log, limit=2)] == [1, 2]
    assert [r["n"] for r in read_records(log)] == [0, 1, 2]
