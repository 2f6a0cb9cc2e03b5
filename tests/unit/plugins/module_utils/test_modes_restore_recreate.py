"""Modes restore (restore.py) and recreate (plan.py + the swap's phases), with a fake Docker."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest
from engine_fakes import IMAGE_V1, FakeDocker, options, web
from test_swap_data import APP_UID, ROOT, _make_db, _rows, data_dir  # noqa: F401 (data_dir is a fixture)

from ansible_collections.greenlight.deploy.plugins.module_utils._engine import phases_release
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.audit import append_jsonl, read_records
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.errors import SwapError
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.sqlite import sqlite_snapshot
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.swap import run_swap


# -- restore ----------------------------------------------------------------------------------------
def _restore_setup(tmp_path, data_dir):
    """v2 replaced v1 (snapshot taken first), v2 wrote, then v1 was rolled back to: v1 is live."""
    app_dir = data_dir.parent
    db = data_dir / "db.sqlite3"
    db.unlink()
    _make_db(db, rows=("as v1 left it",))
    if ROOT:
        os.chown(db, APP_UID, APP_UID)
    snapshot = app_dir / "backups" / "todo-20260101T000000000000Z-before-v2.sqlite3"
    sqlite_snapshot(str(db), str(snapshot))
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO t VALUES ('written by v2')")
    append_jsonl(str(app_dir / "releases.jsonl"), {"result": "ok", "release": "v2", "previous_release": "v1",
                                                    "snapshot": str(snapshot)})
    upstream = tmp_path / "todo-upstream.conf"
    upstream.write_text("server 127.0.0.1:18001;\n")
    values = dict(options(tmp_path, mode="restore", sqlite_path=str(db)), app_dir=str(app_dir))
    values.pop("image")
    return values, db, snapshot, FakeDocker([web(values, "v1", IMAGE_V1, 18001)])


def test_restore_puts_back_the_snapshot_taken_when_the_live_release_was_replaced(tmp_path, data_dir):
    values, db, snapshot, docker = _restore_setup(tmp_path, data_dir)
    predicted = run_swap(dict(values, check_mode=True), docker=docker)
    assert predicted["outcome"]["state"] == "would-restore" and _rows(db) == ["as v1 left it", "written by v2"]
    result = run_swap(values, docker=docker)
    assert _rows(db) == ["as v1 left it"]
    assert result["outcome"]["state"] == "restored" and result["changed"] is True and result["release"] == "v1"
    assert result["snapshot"] == str(snapshot) and result["replaced_by"] == "v2" and result["live_release"] == "v1"
    assert _rows(result["safety_snapshot"]) == ["as v1 left it", "written by v2"]  # the state before, kept
    assert set(result["phases"]) == {"plan", "lock", "restore"}
    line = read_records(values["app_dir"] + "/releases.jsonl")[-1]
    assert line["action"] == "restore-database" and line["result"] == "ok" and line["snapshot"] == str(snapshot)


def test_restore_refuses_a_release_that_is_not_live_and_changes_nothing(tmp_path, data_dir):
    values, db, _snapshot, docker = _restore_setup(tmp_path, data_dir)
    with pytest.raises(SwapError, match="release v2 must be live first \\(live: v1\\)") as caught:
        run_swap(dict(values, release="v2"), docker=docker)
    assert caught.value.result["outcome"]["state"] == "failed" and caught.value.result["outcome"]["phase"] == "plan"
    assert str(caught.value).endswith("Nothing was changed on %s." % caught.value.result["actor"]["host"])
    assert _rows(db) == ["as v1 left it", "written by v2"]
    with pytest.raises(SwapError, match="sqlite_path is required when mode=restore"):
        run_swap({k: v for k, v in values.items() if k != "sqlite_path"}, docker=docker)


# -- recreate ---------------------------------------------------------------------------------------
def _recreate_setup(tmp_path, monkeypatch, env="SECRET=new\n"):
    (tmp_path / "app").mkdir(exist_ok=True)
    (tmp_path / "todo-upstream.conf").write_text("server 127.0.0.1:18001;\n")
    values = options(tmp_path, mode="recreate", drain_until_idle=False, drain_seconds=0,
                     pre_switch_commands=["python manage.py migrate"], sqlite_path=str(tmp_path / "db.sqlite3"))
    values.pop("image")
    live = web(values, "v1", IMAGE_V1, 18001)  # its config hash: no env file
    live["Labels"]["greenlight.image"] = "todo:v1"
    if env is not None:
        (tmp_path / "app.env").write_text(env)
        values["env_file"] = str(tmp_path / "app.env")
    monkeypatch.setattr(phases_release, "wait_healthy",
                        lambda run, container_id, port: {"status": 200, "release": "v1"})
    return values, FakeDocker([live])


def test_recreate_swaps_the_live_release_again_with_the_current_env_file(tmp_path, monkeypatch):
    values, docker = _recreate_setup(tmp_path, monkeypatch)
    predicted = run_swap(dict(values, check_mode=True), docker=docker)
    assert predicted["outcome"]["state"] == "would-recreate" and docker.calls == []
    result = run_swap(values, docker=docker)
    assert result["outcome"]["state"] == "recreated" and result["switched"] is True
    assert result["release"] == "v1" and result["previous_release"] == "v1" and result["image_id"] == IMAGE_V1
    assert result["image"] == "todo:v1" and result["action"] == "config-change"
    # No snapshot, no pre-switch command (its migrations already ran): one container created, the web one.
    assert [c for c in docker.calls if c[0] == "create"] == [("create", "id-new-1")]
    assert "snapshot" not in result and "pre_switch" not in result["phases"]
    new = next(c for c in docker.containers if c["Id"] == "id-new-1")
    assert new["Config"]["Env"] == ["SECRET=new"] and new["Labels"]["greenlight.release"] == "v1"
    assert (tmp_path / "todo-upstream.conf").read_text() == "server 127.0.0.1:18002;\n"
    assert json.loads(json.dumps(result["outcome"]))["live"] == "v1"


def test_recreate_changes_nothing_when_the_live_release_has_this_env_file(tmp_path, monkeypatch):
    values, docker = _recreate_setup(tmp_path, monkeypatch, env=None)
    result = run_swap(values, docker=docker)
    assert result["outcome"]["state"] == "unchanged" and result["changed"] is False and docker.calls == []


def test_recreate_without_a_live_release_fails_in_plan(tmp_path, monkeypatch):
    values, _docker = _recreate_setup(tmp_path, monkeypatch)
    with pytest.raises(SwapError, match="no release of todo is live on this server") as caught:
        run_swap(values, docker=FakeDocker())
    assert caught.value.result["outcome"]["phase"] == "plan" and caught.value.result["switched"] is False
    with pytest.raises(SwapError, match="image is not used with mode=recreate"):
        run_swap(dict(values, image="todo:v2"))
