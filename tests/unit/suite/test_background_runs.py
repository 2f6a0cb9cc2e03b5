"""The background machinery of the test suite itself: tests/prewarm.py (slow fixture setups
started at collection) and tests/molecule_runner.py (Molecule scenarios, two at a time).

Each test loads its own copy of the module, so the session's real background jobs are never
touched."""
from __future__ import annotations

import importlib.util
import threading
import time
import types

import pytest

from gltest import REPO


def fresh(name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("%s_copy" % name, REPO / "tests" / ("%s.py" % name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_setups_run_one_after_the_other_the_one_needed_first_first() -> None:
    prewarm = fresh("prewarm")
    log: list[tuple[str, str]] = []

    def make(name: str):
        def run(job):
            log.append(("start", name))
            time.sleep(0.05)
            log.append(("end", name))
            return name.upper()
        return run

    prewarm.register("late", make("late"), first_needed=30)
    prewarm.register("early", make("early"), first_needed=3)
    prewarm.launch()
    assert prewarm.take("late").result() == "LATE"
    assert prewarm.take("early").result() == "EARLY"
    assert log == [("start", "early"), ("end", "early"), ("start", "late"), ("end", "late")]
    assert prewarm.take("early") is None, "a setup is handed out once"


def test_a_failed_setup_raises_its_own_error_in_the_fixture() -> None:
    prewarm = fresh("prewarm")

    def broken(job):
        raise AssertionError("setup.yml failed: rc 2")

    prewarm.register("broken", broken)
    prewarm.launch()
    with pytest.raises(AssertionError, match="setup.yml failed: rc 2"):
        prewarm.take("broken").result()


def test_untaken_setups_are_cleaned_up_and_a_running_one_aborted_at_the_end() -> None:
    prewarm = fresh("prewarm")
    cleaned: list[str] = []
    release = threading.Event()

    def slow(job):
        job.abort = lambda: (cleaned.append("aborted"), release.set())
        release.wait(30)
        raise RuntimeError("its server was removed")

    prewarm.register("done", lambda job: "value", cleanup=lambda value: cleaned.append("cleaned " + value))
    prewarm.register("slow", slow, first_needed=1)
    prewarm.register("never", lambda job: cleaned.append("never ran"), first_needed=2)
    prewarm.launch()
    prewarm._STARTED[0].thread.join(10)  # "done" (needed first) has its value; "slow" runs
    started = time.monotonic()
    prewarm.stop_all()
    assert time.monotonic() - started < 10, "stop_all waited for a setup instead of aborting it"
    assert "cleaned value" in cleaned and "aborted" in cleaned and "never ran" not in cleaned, cleaned


def test_scenarios_run_two_at_a_time_longest_first(tmp_path, monkeypatch) -> None:
    runner = fresh("molecule_runner")
    monkeypatch.setattr(runner, "DURATIONS", tmp_path / "molecule-seconds.json")
    runner.record_duration("short", 10.0)
    runner.record_duration("long", 300.0)
    runner.record_duration("middle", 100.0)
    assert runner.longest_first(["short", "new", "middle", "long"]) == ["new", "long", "middle", "short"]

    running: set[str] = set()
    most = []
    order = []
    lock = threading.Lock()

    def fake_run(name, started=None):
        with lock:
            order.append(name)
            running.add(name)
            most.append(len(running))
        time.sleep(0.2)
        with lock:
            running.discard(name)
        return runner.Outcome(0, "ok " + name, 0.2)

    monkeypatch.setattr(runner, "run_scenario", fake_run)
    background = runner.BackgroundScenarios(["short", "middle", "long", "new"], workers=2).start()
    outcomes = {name: background.wait(name, timeout=30) for name in ["short", "middle", "long", "new"]}
    background.stop()
    assert all(o.returncode == 0 and o.output == "ok " + n for n, o in outcomes.items()), outcomes
    assert max(most) == 2, most
    assert order[:2] == ["new", "long"] and order[2:] == ["middle", "short"], order


def test_with_one_worker_the_scenarios_run_one_after_the_other(monkeypatch) -> None:
    runner = fresh("molecule_runner")
    monkeypatch.setenv("GREENLIGHT_MOLECULE_WORKERS", "1")
    running: list[int] = []
    current = [0]
    lock = threading.Lock()

    def fake_run(name, started=None):
        with lock:
            current[0] += 1
            running.append(current[0])
        time.sleep(0.05)
        with lock:
            current[0] -= 1
        return runner.Outcome(0, name, 0.05)

    monkeypatch.setattr(runner, "run_scenario", fake_run)
    monkeypatch.setattr(runner, "DURATIONS", REPO / "no-such-dir" / "molecule-seconds.json")
    background = runner.BackgroundScenarios(["a", "b", "c"]).start()
    assert [background.wait(n, timeout=30).output for n in "abc"] == ["a", "b", "c"]
    background.stop()
    assert running == [1, 1, 1]


def test_one_failed_cleanup_does_not_leak_the_other_setups() -> None:
    prewarm = fresh("prewarm")
    cleaned: list[str] = []

    def bad_cleanup(value):
        raise RuntimeError("docker rm failed")

    prewarm.register("first", lambda job: "a", cleanup=bad_cleanup, first_needed=1)
    prewarm.register("second", lambda job: "b", cleanup=lambda value: cleaned.append(value), first_needed=2)
    prewarm.launch()
    for job in prewarm._STARTED:
        job.thread.join(10)
    with pytest.raises(RuntimeError, match="first: docker rm failed"):
        prewarm.stop_all()
    assert cleaned == ["b"]


def test_by_default_two_scenarios_run_at_a_time(monkeypatch) -> None:
    runner = fresh("molecule_runner")
    monkeypatch.delenv("GREENLIGHT_MOLECULE_WORKERS", raising=False)
    assert runner.workers_from_env() == 2
