"""The run's progress (issue 18): one hook (context.Run.progress) hears every phase start and end
and each step of a long phase; the result keeps phase_log and the last phase's progress, which a
failure reports (outcome.progress); deploy.sh draws it (cli_progress.Progress) in place on a
terminal and as plain lines without one."""

from __future__ import annotations

import io
import re
import time

import pytest
from engine_fakes import IMAGE_V2, FakeDocker, make_run

from ansible_collections.greenlight.deploy.plugins.module_utils._engine import cli_progress, phases_release
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.cli_progress import Progress
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.errors import SwapError
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.plan import Plan
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.result import progress_line


def _plan() -> Plan:
    return Plan(release="v2", image="todo:v2", image_id=IMAGE_V2, web_hash="h" * 16, web_change=True,
                new_port=18002)


def test_the_hook_hears_each_phase_and_each_pre_switch_command_and_the_result_keeps_them(tmp_path):
    events = []
    run = make_run(tmp_path, FakeDocker(logs="ok\n"), pre_switch_commands=["manage.py migrate", ["true"]])
    run.progress = events.append
    with run.timed("pre_switch"):
        phases_release.pre_switch(run, _plan())
    assert [(e["event"], e.get("step")) for e in events] == [
        ("start", None), ("step", "command 1 of 2: manage.py migrate"), ("step", "command 2 of 2: true"), ("end", None)]
    assert events[-1]["seconds"] == run.phases["pre_switch"]
    entry, = run.result["phase_log"]
    assert entry["phase"] == "pre_switch" and entry["seconds"] == run.phases["pre_switch"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$", entry["started"])
    assert run.result["progress"] == {"phase": "pre_switch", "started": entry["started"],
                                      "step": "command 2 of 2: true"}


def test_a_step_is_redacted_and_a_failing_hook_never_fails_the_run(tmp_path):
    seen = []

    def hook(event):
        seen.append(event)
        raise OSError("the terminal went away")

    run = make_run(tmp_path, FakeDocker(logs="ok\n"), pre_switch_commands=["manage.py load s3cr3t-token"])
    run.env = ["TOKEN=s3cr3t-token"]
    run.progress = hook
    with run.timed("pre_switch"):
        phases_release.pre_switch(run, _plan())
    assert len(seen) == 1 and run.progress is None  # dropped after it failed; the phase ran on
    assert run.result["progress"]["step"] == "command 1 of 1: manage.py load [redacted TOKEN]"
    assert "s3cr3t" not in repr(run.result.data)


def test_a_failure_reports_how_far_the_failed_phase_got(tmp_path):
    docker = FakeDocker()
    run = make_run(tmp_path, docker, health_timeout=0.3, health_interval=0.05)
    run.new_container = docker.create_container("todo-web-v2", {"Image": IMAGE_V2, "Labels": {}})
    docker.start_container(run.new_container)
    with pytest.raises(SwapError):
        with run.timed("health"):
            phases_release.wait_healthy(run, run.new_container, 1)  # nothing listens on port 1
    run.result.failed("health", "health check failed", True, run.phases, run.progress_seconds())
    progress = run.result["progress"]
    assert progress["phase"] == "health" and progress["seconds"] >= 0.3
    assert progress["step"] == "attempt %d" % run.result["health_attempts"]
    outcome = run.result.final("failed", "v1", False, "failed")["outcome"]
    assert outcome["progress"] == "health ran %.1f s, at attempt %d" % (
        progress["seconds"], run.result["health_attempts"])
    assert run.result.final("deployed", "v2", True, "ok")["outcome"]["progress"] is None
    assert progress_line({"phase": "plan"}) == "plan" and progress_line(None) is None


def test_plain_lines_without_a_terminal_thin_out_repeated_steps(monkeypatch):
    out = io.StringIO()
    progress = Progress(out)
    assert progress.live is False  # a StringIO is no terminal
    clock = [100.0]
    monkeypatch.setattr(cli_progress.time, "monotonic", lambda: clock[0])
    progress({"event": "start", "phase": "health"})
    for attempt in range(1, 40):  # every 0.25 s for ~10 s
        progress({"event": "step", "phase": "health", "step": "attempt %d" % attempt, "repeat": True})
        clock[0] += 0.25
    progress({"event": "end", "phase": "health", "seconds": 9.75})
    progress({"event": "start", "phase": "pre_switch"})
    progress({"event": "step", "phase": "pre_switch", "step": "command 1 of 1: migrate\x1b[2J"})
    progress.failed()
    assert out.getvalue().splitlines() == [
        "deploy.sh: phase health", "deploy.sh: phase health: attempt 1", "deploy.sh: phase health: attempt 21",
        "deploy.sh: phase health done in 9.75s", "deploy.sh: phase pre_switch",
        "deploy.sh: phase pre_switch: command 1 of 1: migrate\\x1b[2J",
        "deploy.sh: pre_switch FAILED after 0.0s (command 1 of 1: migrate\\x1b[2J)"]


def test_on_a_terminal_the_line_is_redrawn_with_a_counter_until_the_phase_ends():
    out = io.StringIO()
    progress = Progress(out, live=True)
    progress({"event": "start", "phase": "pre_switch"})
    progress({"event": "step", "phase": "pre_switch", "step": "command 1 of 1: migrate"})
    time.sleep(0.45)  # the ticker redraws every 0.1 s
    progress({"event": "end", "phase": "pre_switch", "seconds": 0.45})
    progress.close()
    parts = out.getvalue().split("\r")
    drawn = [p for p in parts if p.startswith("deploy.sh: pre_switch ") and "done" not in p]
    assert len(drawn) >= 3 and all(p.rstrip().endswith("command 1 of 1: migrate") for p in drawn[1:])
    assert len({re.search(r"(\d+\.\d)s", p).group(1) for p in drawn}) >= 2  # the counter moves
    assert parts[-1].startswith("deploy.sh: pre_switch done in 0.45s") and parts[-1].endswith("\n")
    assert "\n" not in "".join(parts[:-1])  # one line, drawn over in place
