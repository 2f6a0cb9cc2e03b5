"""phases_traffic.py on its own: switch (and switch back), drain, stop_old."""

from __future__ import annotations

import pytest
from engine_fakes import IMAGE_V1, FakeDocker, make_run, options, web

from ansible_collections.greenlight.deploy.plugins.module_utils._engine import phases_traffic
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.errors import SwapError
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
