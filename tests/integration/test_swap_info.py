"""container_swap_info through ansible on a real server state: live, locked (a deploy in its
pre-switch phase), failed (a deploy whose health gate failed; the earlier release still serves)."""

from __future__ import annotations

import json

import pytest

from conftest import image, require_images, run_module, run_playbook, start_engine_process, wait_for_phase

from ansible_collections.greenlight.deploy.plugins.module_utils._engine.errors import SwapError
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.swap import run_swap

SLOW_COMMAND = ["python", "-c", "import time; time.sleep(4)"]

pytestmark = pytest.mark.docker


def info(app_host, check: bool = False, **extra):
    options = {"app_name": app_host.app, "app_dir": str(app_host.app_dir),
               "upstream_file": str(app_host.nginx.upstream_file)}
    options.update(extra)
    answer = run_module(options, check=check, module="greenlight.deploy.container_swap_info")
    assert answer["_rc"] == 0, answer.get("msg")
    assert answer["changed"] is False
    return answer


def test_info_live_failed_locked(app_host, nginx):
    require_images("v1", "v2", "bad-health")
    empty = info(app_host)
    assert empty["condition"] == "none" and empty["live"] is None and empty["last_records"] == []

    run_swap(app_host.options(image=image("v1")))
    live = info(app_host, check=True)
    assert live["condition"] == "live"
    assert live["live"]["release"] == "v1" and live["live"]["state"] == "running"
    assert live["upstream_port"] == nginx.upstream_port() == int(live["live"]["port"])
    assert live["live"]["image_id"].startswith("sha256:") and live["live"]["since"].endswith("Z")
    assert live["lock"] is None and live["last_deploy"]["release"] == "v1"

    with pytest.raises(SwapError):
        run_swap(app_host.options(image=image("bad-health"), health_timeout=3))
    failed = info(app_host)
    assert failed["condition"] == "failed"
    assert failed["live"]["release"] == "v1"  # what serves is still the release from before
    assert failed["last_deploy"]["result"] == "failed" and failed["last_deploy"]["release"] == "bad-health"
    assert failed["last_deploy"]["failed_phase"] == "health"
    assert nginx.get("/health") == (200, "v1")

    # The fleet table and the JSON of playbooks/status.yml say the same.
    report = app_host.app_dir.parent / "status.json"
    played = run_playbook("status.yml", app_host, "status_json=%s" % report)
    assert played.returncode == 0, played.stdout + played.stderr
    fleet = json.loads(report.read_text())
    assert fleet["localhost"]["condition"] == "failed" and fleet["localhost"]["live"]["release"] == "v1"
    assert fleet["localhost"]["last_deploy"]["failed_phase"] == "health"
    header = next(line for line in played.stdout.splitlines() if "HOST" in line and "CONDITION" in line)
    row = next(line for line in played.stdout.splitlines() if line.strip(' ",').startswith("localhost "))
    assert row.index("FAILED") == header.index("CONDITION") and "v1 (" in row and "bad-health failed in health" in row

    slow = start_engine_process(app_host.options(image=image("v2"), pre_switch_commands=[SLOW_COMMAND]))
    try:
        holder = wait_for_phase(app_host.lock_file, "pre_switch", pid=slow.pid)
        locked = info(app_host, last=1)
        output = slow.communicate(timeout=120)[0]
    finally:
        if slow.poll() is None:
            slow.kill()
    assert locked["condition"] == "locked"
    assert locked["lock"]["pid"] == holder["pid"] == slow.pid and locked["lock"]["phase"] == "pre_switch"
    assert locked["lock"]["release"] == "v2" and locked["live"]["release"] == "v1"
    assert len(locked["last_records"]) == 1
    assert slow.returncode == 0, output

    after = info(app_host)
    assert after["condition"] == "live" and after["live"]["release"] == "v2"
    assert [k["release"] for k in after["kept"]] == ["v1"]
