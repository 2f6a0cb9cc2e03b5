"""Modes recreate and restore on a real server, through the module (what the rotation and
rollback playbooks can call instead of deriving the live release themselves)."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import image, require_images, run_module

from ansible_collections.greenlight.deploy.plugins.module_utils._engine.swap import run_swap

from test_swap_basic import add_row, list_names

pytestmark = pytest.mark.docker


def _env_of(container_id: str) -> list[str]:
    out = subprocess.run(["docker", "inspect", "-f", "{{json .Config.Env}}", container_id], capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out)


def test_recreate_then_restore_through_the_module(app_host, nginx):
    require_images("v1", "v2")
    run_swap(app_host.options(image=image("v1")))
    add_row(app_host.db_path, "written by v1")
    run_swap(app_host.options(image=image("v2")))
    add_row(app_host.db_path, "written by v2")
    rollback = app_host.options(mode="rollback")
    rollback.pop("pre_switch_commands")
    run_swap(rollback)
    assert nginx.get("/health") == (200, "v1")

    # recreate: the live release v1 again, with a changed env file; unchanged when nothing changed.
    app_host.write_env(GREENLIGHT_ROTATED="yes")
    options = app_host.options(mode="recreate")
    recreated = run_module(options)
    assert recreated.get("failed") is not True, recreated.get("msg")
    assert recreated["outcome"]["state"] == "recreated" and recreated["release"] == "v1"
    assert recreated["swap_action"] == "config-change" and recreated["live_release"] == "v1"
    assert "GREENLIGHT_ROTATED=yes" in _env_of(recreated["container_id"])
    assert "pre_switch" not in recreated["phases"] and "snapshot" not in recreated
    assert nginx.get("/health") == (200, "v1")
    again = run_module(options)
    assert again["changed"] is False and again["outcome"]["state"] == "unchanged"

    # restore: the database as v1 left it when v2 replaced it.
    assert "written by v2" in list_names(app_host.db_path)
    restored = run_module(app_host.options(mode="restore"))
    assert restored.get("failed") is not True, restored.get("msg")
    assert restored["outcome"]["state"] == "restored" and restored["replaced_by"] == "v2"
    names = list_names(app_host.db_path)
    assert "written by v1" in names and "written by v2" not in names
    assert app_host.audit_lines()[-1]["action"] == "restore-database"
