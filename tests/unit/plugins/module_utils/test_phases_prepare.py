"""phases_prepare.py on its own: lock (and plan again under it), cleanup."""

from __future__ import annotations

import json

from engine_fakes import IMAGE_V1, FakeDocker, make_run, options, web

from ansible_collections.greenlight.deploy.plugins.module_utils._engine import phases_prepare
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.plan import make_plan


def test_lock_takes_the_lock_plans_again_and_names_the_old_container(tmp_path):
    values = options(tmp_path)
    (tmp_path / "todo-upstream.conf").write_text("server 127.0.0.1:18001;\n")
    docker = FakeDocker([web(values, "v1", IMAGE_V1, 18001)])
    run = make_run(tmp_path, docker)
    plan = make_plan(run)
    docker.containers.append(web(values, "v0", IMAGE_V1, 18002, state="exited"))  # changed while we waited
    replanned = phases_prepare.lock(run, plan)
    try:
        holder = json.loads((tmp_path / "app" / "deploy.lock").read_text())
        assert holder["phase"] == "lock" and holder["old_container"] == "id-web-v1"
        assert holder["previous_release"] == "v1" and holder["release"] == "v2"
        assert replanned is run.plan and replanned is not plan and replanned.live["Id"] == "id-web-v1"
        assert run.result["previous_release"] == "v1" and "lock" in run.phases
        assert "recovered_from" not in run.result
    finally:
        run.release_lock()


def test_lock_reports_the_run_it_recovers_from(tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "deploy.lock").write_text(json.dumps({"pid": 99, "phase": "health", "release": "v9"}))
    run = make_run(tmp_path, FakeDocker())
    phases_prepare.lock(run, make_plan(run))
    run.release_lock()
    assert run.result["recovered_from"]["pid"] == 99 and run.result["recovered_from"]["phase"] == "health"


def test_cleanup_removes_one_offs_and_never_started_and_stops_a_leftover_after_its_drain(tmp_path):
    values = options(tmp_path, drain_until_idle=False, drain_seconds=0)
    (tmp_path / "todo-upstream.conf").write_text("server 127.0.0.1:18001;\n")
    leftover = web(values, "v3", IMAGE_V1, 18002, created=3)
    docker = FakeDocker([web(values, "v1", IMAGE_V1, 18001), leftover,
                         web(values, "v2", IMAGE_V1, 0, state="exited", service="pre-switch"),
                         web(values, "v4", IMAGE_V1, 18002, state="created", created=4)])
    docker.containers[-1]["Id"] = "id-never-started"
    run = make_run(tmp_path, docker, drain_until_idle=False, drain_seconds=0)
    cleaned = phases_prepare.cleanup(run, make_plan(run))
    assert sorted(cleaned) == ["todo-pre-switch-v2-abc123", "todo-web-v3-abc123", "todo-web-v4-abc123"]
    # no lock journal: the leftover may have served, so it is stopped before it is removed
    assert docker.calls.index(("stop", "id-web-v3")) < docker.calls.index(("remove", "id-web-v3"))
    assert ("remove", "id-never-started") in docker.calls and ("stop", "id-web-v1") not in docker.calls
    assert (tmp_path / "todo-upstream.conf").read_text() == "server 127.0.0.1:18001;\n"


def test_cleanup_keeps_the_previous_release_of_an_interrupted_run_for_rollback(tmp_path):
    values = options(tmp_path, drain_until_idle=False, drain_seconds=0)
    (tmp_path / "todo-upstream.conf").write_text("server 127.0.0.1:18002;\n")
    docker = FakeDocker([web(values, "v1", IMAGE_V1, 18001), web(values, "v2", IMAGE_V1, 18002, created=2)])
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "deploy.lock").write_text(json.dumps({"phase": "drain", "old_container": "id-web-v1"}))
    run = make_run(tmp_path, docker, drain_until_idle=False, drain_seconds=0)
    plan = phases_prepare.lock(run, make_plan(run))
    try:
        assert phases_prepare.cleanup(run, plan) == ["todo-web-v1-abc123"]
    finally:
        run.release_lock()
    assert ("stop", "id-web-v1") in docker.calls and ("remove", "id-web-v1") not in docker.calls
