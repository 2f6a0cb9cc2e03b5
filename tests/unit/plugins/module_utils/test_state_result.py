"""state.py (the one reader of what is live) and result.py (the outcome record) on their own."""

from __future__ import annotations

import pytest
from engine_fakes import IMAGE_V1, IMAGE_V2, FakeDocker, options, web

from ansible_collections.greenlight.deploy.plugins.module_utils._engine import state
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.docker_api import DockerError
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.result import OUTCOME_KEYS, Result


def test_state_reads_live_kept_and_leftovers_from_docker_and_the_upstream_file(tmp_path):
    values = options(tmp_path)
    (tmp_path / "todo-upstream.conf").write_text("server 127.0.0.1:18002;\n")
    docker = FakeDocker([web(values, "v1", IMAGE_V1, 18001, state="exited", created=1),
                         web(values, "v2", IMAGE_V2, 18002, created=2),
                         web(values, "v3", IMAGE_V2, 18001, created=3),
                         web(values, "v2", IMAGE_V2, 0, service="worker")])
    now = state.read_state(docker, "todo", str(tmp_path / "todo-upstream.conf"))
    assert now.upstream_port == 18002 and now.live["Id"] == "id-web-v2" and now.live_release == "v2"
    assert [c["Id"] for c in now.others] == ["id-web-v3"]
    assert [c["Id"] for c in now.kept] == ["id-web-v1", "id-web-v3"]
    assert now.since == "1970-01-01T00:00:02Z"
    assert state.live_release(docker, "todo", str(tmp_path / "todo-upstream.conf")) == "v2"


def test_state_no_live_release_when_the_named_container_is_stopped(tmp_path):
    values = options(tmp_path)
    (tmp_path / "todo-upstream.conf").write_text("server 127.0.0.1:18001;\n")
    docker = FakeDocker([web(values, "v1", IMAGE_V1, 18001, state="exited")])
    now = state.read_state(docker, "todo", str(tmp_path / "todo-upstream.conf"))
    assert now.pointed["Id"] == "id-web-v1" and now.live is None and now.live_release is None


def test_live_release_is_unknown_when_docker_cannot_tell(tmp_path):
    class Broken:
        def list_containers(self, labels=None, all=True):
            raise DockerError("cannot connect")

    assert state.live_release(Broken(), "todo", str(tmp_path / "none.conf")) == "unknown"


@pytest.mark.parametrize("outcome_state", ["deployed", "failed"])
def test_the_outcome_record_has_every_key_always(outcome_state):
    result = Result({"user": "deploy"})
    result.set(action="deploy", release="v2", previous_release="v1", phases={"plan": 0.1})
    if outcome_state == "failed":
        result.failed("health", "boom", True, {"plan": 0.1, "health": 2.0})
    data = result.final(outcome_state, "v1", False, "deploy of todo failed\n  in phase health")
    assert set(data["outcome"]) == set(OUTCOME_KEYS)
    assert data["switched"] is False and data["live_release"] == "v1" and data["outcome"]["live"] == "v1"
    assert data["outcome"]["phase"] == ("health" if outcome_state == "failed" else None)
    assert data["outcome"]["previous"] == "v1" and "\n" not in data["outcome"]["message"]


def test_every_swap_result_carries_switched_live_release_and_outcome(tmp_path):
    from engine_fakes import make_run  # noqa: F401 - the same options as the phase tests

    from ansible_collections.greenlight.deploy.plugins.module_utils._engine.errors import SwapError
    from ansible_collections.greenlight.deploy.plugins.module_utils._engine.swap import run_swap

    values = options(tmp_path)
    (tmp_path / "todo-upstream.conf").write_text("server 127.0.0.1:18001;\n")
    docker = FakeDocker([web(values, "v2", IMAGE_V2, 18001)])
    unchanged = run_swap(values, docker=docker)
    assert unchanged["outcome"]["state"] == "unchanged" and unchanged["live_release"] == "v2"
    assert unchanged["switched"] is False and set(unchanged["outcome"]) == set(OUTCOME_KEYS)
    would = run_swap(dict(values, image="todo:v1", check_mode=True), docker=docker)
    assert would["outcome"]["state"] == "would-deploy" and would["live_release"] == "v2"
    with pytest.raises(SwapError) as caught:
        run_swap(dict(values, image="todo:v9"), docker=docker)  # not on this server: fails in plan
    failed = caught.value.result
    assert failed["outcome"]["state"] == "failed" and failed["outcome"]["phase"] == "plan"
    assert failed["live_release"] == "v2" and failed["switched"] is False
