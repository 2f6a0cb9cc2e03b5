"""bench/run.py's report: the issue 11 speed figures are computed from what the runs measured."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_run", REPO / "bench" / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module
    spec.loader.exec_module(module)
    return module


def window(sent=100, failed=0, p50=4.0, p99=20.0):
    return {"sent": sent, "failed": failed, "errors": {}, "rate": 200.0, "p50_ms": p50, "p99_ms": p99,
            "longest_gap_s": 0.05}


def run(seconds, cpu=1.0, phases=None, changed=0, tasks=()):
    return {"seconds": seconds, "controller_cpu_s": cpu, "rc": 0,
            "recap": {"glbench-1": {"ok": 3, "changed": changed, "unreachable": 0, "failed": 0}},
            "summary": {"glbench-1": {"state": "deployed", "phases": dict(phases or {})}},
            "slowest": list(tasks)[:8], "tasks": list(tasks)}


def figures(quiet_seconds, noop_seconds, cpu1, cpu6):
    phases = {"pull": 0.2, "plan": 0.05, "pre_switch": 0.8, "start": 0.3, "health": 0.5, "switch": 0.2,
              "drain": 0.5, "record": 0.01}
    loaded = {"steady": window(), "during": window(), "total": window(), "stale_retries": 0,
              "new_release_after_s": 2.0, "outcome": run(quiet_seconds + 1, phases=phases)}
    naive = {"steady": window(), "during": window(failed=20), "total": window(failed=20), "stale_retries": 0,
             "new_release_after_s": 1.0, "outcome": {"seconds": 1.6, "phases": {"stop": 0.4}}}
    return {
        "threads": 256, "machine": {"nproc": 2, "loadavg_start": [1.0], "loadavg_end": [1.0]},
        "greenlight": loaded, "naive": naive, "naive_quiet": {"seconds": 1.6, "phases": {"stop": 0.4}},
        "noop": run(noop_seconds),
        "rollback": {"outcome": {"seconds": 4.0}, "total": window()},
        "fleet": {"1": {"deploy": run(quiet_seconds, phases=phases, tasks=[("Deploy | container_swap", 2.9)])},
                  "3": {"deploy": run(quiet_seconds + 1, phases=phases)},
                  "6": {"deploy": run(quiet_seconds + 2, phases=phases)},
                  "noop1": run(1.2, cpu=cpu1), "noop6": run(1.9, cpu=cpu6), "empty": run(0.6, cpu=0.9)},
    }


def verdict_row(rows, figure):
    return next(row for row in rows if row[0].startswith(figure))


def test_overhead_is_wall_minus_the_real_work(bench):
    # real work = pull 0.2 + pre_switch 0.8 + start 0.3 + health 0.5 + switch 0.2 + drain 0.5 = 2.5 s
    rows, verdicts = bench.table(figures(quiet_seconds=3.9, noop_seconds=1.2, cpu1=1.0, cpu6=1.2))
    assert verdict_row(rows, "deploy overhead")[1].startswith("1.4 s (3.9 s - 2.5 s)")
    assert verdict_row(rows, "deploy overhead")[4] == "yes"
    rows, _ = bench.table(figures(quiet_seconds=4.1, noop_seconds=1.2, cpu1=1.0, cpu6=1.2))
    assert verdict_row(rows, "deploy overhead")[4] == "NO"
    assert any(v.startswith("Deploy overhead missed: 4.1 s wall = real work 2.5 s") for v in _verdicts(bench, 4.1))


def _verdicts(bench, quiet):
    return bench.table(figures(quiet_seconds=quiet, noop_seconds=1.2, cpu1=1.0, cpu6=1.2))[1]


def test_noop_target_is_one_and_a_half_seconds(bench):
    rows, _ = bench.table(figures(quiet_seconds=3.0, noop_seconds=1.5, cpu1=1.0, cpu6=1.2))
    assert verdict_row(rows, "no-op re-deploy")[4] == "yes"
    rows, _ = bench.table(figures(quiet_seconds=3.0, noop_seconds=1.6, cpu1=1.0, cpu6=1.2))
    assert verdict_row(rows, "no-op re-deploy")[4] == "NO"


def test_fleet_controller_part_is_the_cpu_ratio(bench):
    rows, _ = bench.table(figures(quiet_seconds=3.0, noop_seconds=1.2, cpu1=1.0, cpu6=1.3))
    assert verdict_row(rows, "controller CPU")[4] == "yes (1.30x)"
    rows, _ = bench.table(figures(quiet_seconds=3.0, noop_seconds=1.2, cpu1=1.0, cpu6=1.4))
    assert verdict_row(rows, "controller CPU")[4] == "NO (1.40x)"


def test_the_three_speed_targets_are_printed_with_met_or_missed(bench):
    rows, _ = bench.table(figures(quiet_seconds=3.9, noop_seconds=1.6, cpu1=1.0, cpu6=1.3))
    lines = bench.speed_targets(rows)
    assert lines[0] == "Issue 11 speed targets:" and len(lines) == 4
    assert lines[1].startswith("  no-op re-deploy: 1.6 s, changed=0 (target <= 1.5 s, changed=0): MISSED")
    assert lines[2].startswith("  deploy overhead: wall - engine's real work, no load: 1.4 s") and lines[2].endswith(": met")
    assert lines[3].endswith("(target 6 <= 1.3x 1): met")
