"""deploy.sh shows the run while it runs (issue 18): on a terminal (driven here under a
pseudo-terminal) each phase is redrawn in place with a spinner, its elapsed seconds and its latest
step, then ends with its time; without a terminal, plain lines; a failure names the phase, how
long it ran and the step it was at. The same facts are in releases.jsonl (phase_log, progress)."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import APP_IMAGE, COLLECTIONS, image, require_images

from ansible_collections.greenlight.deploy.plugins.module_utils._engine.swap import run_swap

pytestmark = pytest.mark.docker

DRIVER = """
import sys
sys.path.insert(0, sys.argv[1])
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.cli import main
sys.exit(main(sys.argv[3:], config_path=sys.argv[2]))
"""


def _deploy_json(tmp_path: Path, app_host) -> Path:
    """deploy.json as deploy_script renders it: the engine options of this app host (root's file)."""
    path = tmp_path / "deploy.json"
    path.write_text(json.dumps({"swap": app_host.options(), "image_repository": APP_IMAGE}))
    path.chmod(0o644)
    return path


def _argv(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-c", DRIVER, str(COLLECTIONS), str(config), *args]


def _under_pty(argv: list[str], timeout: float = 240) -> tuple[int, str]:
    """Run argv with stdin, stdout and stderr on a pseudo-terminal; everything it wrote, raw."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            assert time.monotonic() < deadline, "deploy.sh did not end within %ss" % timeout
            ready, _w, _x = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child side is closed
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                # Gone, and nothing left to read within 0.1 s.
                break
        return proc.wait(timeout=30), b"".join(chunks).decode("utf-8", "replace")
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def _redraws(screen: str, phase: str) -> list[str]:
    """The in-place drawings of `phase`'s line (each after a carriage return)."""
    return [part.rstrip() for part in re.split(r"[\r\n]", screen)
            if re.match(r"^deploy\.sh: %s +[|/\\-] +\d+\.\d+s" % re.escape(phase), part)]


def test_deploy_sh_on_a_terminal_shows_each_phase_live_then_its_time(tmp_path, app_host, nginx):
    require_images("v1", "v2")
    run_swap(app_host.options(image=image("v1")))
    config = _deploy_json(tmp_path, app_host)
    code, screen = _under_pty(_argv(config, "v2", "--no-pull"))
    assert code == 0, screen
    assert nginx.get("/health") == (200, "v2")
    record = app_host.audit_lines()[-1]
    assert record["result"] == "ok" and record["release"] == "v2"
    # Every phase that ran ends on its own line with its time, in the order the engine ran them
    # (the same phases and times as the result's phase_log).
    done = re.findall(r"\rdeploy\.sh: (\w+) +done in (\d+\.\d\d)s *\r?\n", screen)
    assert [phase for phase, _seconds in done] == [entry["phase"] for entry in record["phase_log"]], screen
    assert all(abs(float(seconds) - entry["seconds"]) <= 0.006 for (_phase, seconds), entry in
               zip(done, record["phase_log"]))
    assert [p for p, _s in done][:3] == ["plan", "lock", "cleanup"] and "pre_switch" in dict(done)
    # While the migration runs, its line is redrawn: the command, a spinner, a growing counter.
    migrate = [line for line in _redraws(screen, "pre_switch")
               if line.endswith("command 1 of 1: python manage.py migrate --noinput")]
    counters = {float(re.search(r"(\d+\.\d+)s", line).group(1)) for line in migrate}
    assert len(counters) >= 2, "the pre_switch line was not redrawn while migrate ran:\n%r" % screen
    assert len({line.split()[2] for line in migrate}) >= 2  # the spinner turns
    # The health gate shows its attempts.
    assert any(re.search(r"  attempt \d+$", line) for line in _redraws(screen, "health")), screen
    assert any(re.search(r"  verify attempt \d+ through the proxy$", line) for line in _redraws(screen, "switch"))
    # No plain phase lines on a terminal; the summary follows on stdout as before.
    assert "deploy.sh: phase " not in screen
    assert "deploy.sh: put release v2 live" in screen and "  phases:  plan " in screen


def test_deploy_sh_without_a_terminal_prints_plain_lines_and_a_failure_says_how_far_it_got(tmp_path, app_host,
                                                                                           nginx):
    require_images("v1", "bad-migration")
    run_swap(app_host.options(image=image("v1")))
    config = _deploy_json(tmp_path, app_host)
    proc = subprocess.run(_argv(config, "bad-migration", "--no-pull"), capture_output=True, text=True,
                          timeout=240, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "\r" not in proc.stderr
    lines = proc.stderr.splitlines()
    for expected in ("deploy.sh: phase plan", "deploy.sh: phase snapshot", "deploy.sh: phase pre_switch",
                     "deploy.sh: phase pre_switch: command 1 of 1: python manage.py migrate --noinput"):
        assert expected in lines, proc.stderr
    assert any(re.match(r"^deploy\.sh: phase plan done in \d+\.\d\ds$", line) for line in lines), proc.stderr
    assert any(re.match(r"^deploy\.sh: phase snapshot done in \d+\.\d\ds$", line) for line in lines), proc.stderr
    failed = [line for line in lines if line.startswith("deploy.sh: pre_switch FAILED after ")]
    assert failed and failed[0].endswith("s (command 1 of 1: python manage.py migrate --noinput)"), proc.stderr
    assert not any("phase pre_switch done" in line for line in lines)
    assert nginx.get("/health") == (200, "v1")
    # The record keeps how far the failed phase got (the playbook summary shows the same).
    record = app_host.audit_lines()[-1]
    assert record["failed_phase"] == "pre_switch"
    progress = record["progress"]
    assert progress["phase"] == "pre_switch" and progress["seconds"] > 0
    assert progress["step"] == "command 1 of 1: python manage.py migrate --noinput"
    assert [entry["phase"] for entry in record["phase_log"]][-1] == "snapshot"
