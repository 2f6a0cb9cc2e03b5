"""phases_finish.py on its own: services, prune, record."""

from __future__ import annotations

import json

from engine_fakes import IMAGE_V1, IMAGE_V2, FakeDocker, make_run, options, web

from ansible_collections.greenlight.deploy.plugins.module_utils._engine import phases_finish
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.options import ServiceSpec
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.plan import Plan, ServicePlan


def test_services_start_the_new_one_before_stopping_the_old_but_a_singleton_the_other_way_round(tmp_path):
    values = options(tmp_path)
    old_worker = web(values, "v1", IMAGE_V1, 0, service="worker")
    old_beat = web(values, "v1", IMAGE_V1, 0, service="beat")
    docker = FakeDocker([old_worker, old_beat])
    run = make_run(tmp_path, docker)
    plan = Plan(release="v2", image_id=IMAGE_V2, services_plan=[
        ServicePlan("worker", ServiceSpec("worker", "python worker.py"), "h1", [old_worker], True),
        ServicePlan("beat", ServiceSpec("beat", "python beat.py", singleton=True), "h2", [old_beat], True)])
    names = phases_finish.services(run, plan)
    assert [n.rsplit("-", 1)[0] for n in names] == ["todo-worker-v2", "todo-beat-v2"]
    calls = docker.calls
    assert calls.index(("start", "id-new-1")) < calls.index(("stop", "id-worker-v1"))
    assert calls.index(("stop", "id-beat-v1")) < calls.index(("start", "id-new-2"))
    assert {c["Labels"]["greenlight.service"] for c in docker.containers} == {"worker", "beat"}


def test_services_remove_a_service_no_longer_wanted(tmp_path):
    old = web(options(tmp_path), "v1", IMAGE_V1, 0, service="mailer")
    docker = FakeDocker([old])
    assert phases_finish.services(make_run(tmp_path, docker), Plan(services_plan=[
        ServicePlan("mailer", None, None, [old], True)])) == []
    assert docker.calls == [("stop", "id-mailer-v1"), ("remove", "id-mailer-v1")]


def test_prune_keeps_releases_to_keep_and_never_the_live_one(tmp_path):
    values = options(tmp_path)
    webs = [web(values, "v%d" % n, IMAGE_V1, 18001, state="exited", created=n) for n in range(1, 5)]
    live = web(values, "v5", IMAGE_V2, 18002, created=5)
    docker = FakeDocker(webs + [live])
    run = make_run(tmp_path, docker, releases_to_keep=2)
    removed = phases_finish.prune(run, live["Id"], "v5")
    assert removed == ["todo-web-v2-abc123", "todo-web-v1-abc123"]
    assert [c["Labels"]["greenlight.release"] for c in docker.containers] == ["v3", "v4", "v5"]
    assert run.result["pruned_images"] == []  # IMAGE_V1 is still used by the kept releases


def test_prune_counts_the_release_being_stopped_in_the_background_as_the_newest_kept_one(tmp_path):
    """The old release still runs while a background child stops it: it is kept (not one more),
    and never removed here; with no room for it, the child removes it once stopped."""
    values = options(tmp_path)
    webs = [web(values, "v%d" % n, IMAGE_V1, 18001, state="exited", created=n) for n in range(1, 4)]
    old = web(values, "v4", IMAGE_V1, 18001, created=4)  # running: being stopped
    live = web(values, "v5", IMAGE_V2, 18002, created=5)
    docker = FakeDocker(webs + [old, live])
    run = make_run(tmp_path, docker, releases_to_keep=2)
    assert phases_finish.prune(run, live["Id"], "v5", stopping_id=old["Id"]) == ["todo-web-v2-abc123",
                                                                                  "todo-web-v1-abc123"]
    assert [c["Labels"]["greenlight.release"] for c in docker.containers] == ["v3", "v4", "v5"]
    assert run.remove_after_stop is False

    docker = FakeDocker([old, live])
    run = make_run(tmp_path, docker, releases_to_keep=0)
    assert phases_finish.prune(run, live["Id"], "v5", stopping_id=old["Id"]) == []
    assert docker.calls == [] and run.remove_after_stop is True


def test_record_appends_the_result_with_its_phases_to_the_releases_log(tmp_path):
    run = make_run(tmp_path, FakeDocker())
    run.result.set(action="deploy", release="v2", previous_release="v1", changed=True)
    run.phases["switch"] = 0.1
    phases_finish.record(run, Plan(release="v2", web_change=False))
    line = json.loads((tmp_path / "app" / "releases.jsonl").read_text())
    assert line["release"] == "v2" and line["previous_release"] == "v1" and line["result"] == "ok"
    assert set(line["phases"]) == {"switch", "record"} and run.result["diff"]["after"]["release"] is None
