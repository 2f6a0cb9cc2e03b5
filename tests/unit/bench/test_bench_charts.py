"""bench/charts.py (issue 18): the request timelines `make bench` draws into docs/img. A chart is
rendered from a small recorded run - fixtures/timelines-small.json.gz: the greenlight and naive
script deploys v1 -> v2 of a real bench run under load (bench/results/20261129T223216Z, the run
docs/img/bench-deploy.png was drawn from, at ~40 req/s on a loaded machine), trimmed to the window
the chart shows - and
checked by its data model and by its pixels: failures appear, in their colour, only where the
recorded run had them."""

from __future__ import annotations

import gzip
import importlib.util
import json
import struct
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "timelines-small.json.gz"


@pytest.fixture(scope="module")
def charts():
    spec = importlib.util.spec_from_file_location("bench_charts", REPO / "bench" / "charts.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_charts"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def recorded():
    return json.loads(gzip.decompress(FIXTURE.read_bytes()))


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _pixels_of(image, box, colour: str, tolerance: float = 0.02) -> int:
    """Pixels of `colour` (#rrggbb) inside box (left, top, right, bottom) of an RGBA float image."""
    want = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    left, top, right, bottom = box
    count = 0
    for row in image[top:bottom]:
        for pixel in row[left:right]:
            if all(abs(pixel[i] - want[i]) <= tolerance for i in range(3)):
                count += 1
    return count


def test_a_chart_of_a_recorded_run_shows_the_naive_failures_in_red_and_none_for_greenlight(charts, recorded,
                                                                                           tmp_path):
    from matplotlib import image as mpimg

    greenlight, naive = recorded["greenlight-v1-v2"], recorded["naive-v1-v2"]
    path = tmp_path / "bench-deploy.png"
    drawn = charts.render(path, "Deploy v1 -> v2 under load", [("greenlight", greenlight), ("naive", naive)])
    # The PNG: its header says the size drawn, and it is a chart, not an empty or huge file.
    assert _png_size(path) == tuple(drawn["size"]) == (1100, 730)
    assert 20_000 < path.stat().st_size < 400_000
    # The data model holds every recorded answer in the window, failures apart.
    start, end = drawn["models"][0]["start"], drawn["models"][0]["end"]
    assert start == -2.0 and end == max(greenlight["deploy"][1], naive["deploy"][1]) + 2.0
    for timeline, model in zip((greenlight, naive), drawn["models"]):
        inside = [r for r in timeline["requests"] if start <= r[0] < end]
        assert model["failed_total"] == sum(1 for r in inside if r[2] is None)
        assert model["answered_total"] == sum(1 for r in inside if r[2] is not None)
        for index, release in enumerate(timeline["releases"]):
            assert sum(model["ok"][release]) == sum(1 for r in inside if r[2] == index)
        assert [p[0] for p in model["phases"]] == [p[0] for p in timeline["phases"]]
    green, bad = drawn["models"]
    assert green["failed_total"] == 0 and set(green["ok"]) == {"v1", "v2"}
    assert bad["failed_total"] > 20 and set(bad["failed_by_status"]) <= {"HTTP 502", "connection error"}
    assert bad["longest_gap"] > 5 * green["longest_gap"]  # the naive script's gap
    # The pixels: red only in the naive panel (the legend is outside both), v1 and v2 in both.
    image = mpimg.imread(str(path))
    assert image.shape[:2] == (730, 1100)
    top_panel, bottom_panel = drawn["panels"]
    assert top_panel[3] <= bottom_panel[1]  # one above the other
    assert _pixels_of(image, top_panel, charts.FAILED_COLOUR) == 0
    assert _pixels_of(image, bottom_panel, charts.FAILED_COLOUR) > 200
    for panel in drawn["panels"]:
        for colour in charts.RELEASE_COLOURS[:2]:
            assert _pixels_of(image, panel, colour) > 1000


def test_render_bench_draws_the_scenarios_a_run_saved(charts, recorded, tmp_path):
    results = tmp_path / "20261129T000000Z"
    results.mkdir()
    for label, timeline in recorded.items():
        (results / ("%s.timeline.json" % label)).write_text(json.dumps(timeline))
    drawn = charts.render_bench(results, tmp_path / "img")
    assert [Path(chart["path"]).name for chart in drawn] == ["bench-deploy.png"]  # no rollback recorded here
    assert len(drawn[0]["panels"]) == 2 and (tmp_path / "img" / "bench-deploy.png").exists()


def test_a_timeline_is_saved_in_seconds_from_the_deploy_start(charts, tmp_path):
    began, wall_began = 500.0, 1_764_450_000.0
    results = [  # (done, status, release, error, kind, latency, sent) as bench/loadgen.py records them
        (499.5, 200, "v1", None, "keep-alive", 0.004, 499.496),
        (501.25, 502, None, None, "new-connection", 0.01, 501.24),
        (501.5, 0, None, "ConnectionRefusedError: refused", "new-connection", 0.001, 501.499),
        (502.0, 200, "v2", None, "keep-alive", 0.004, 501.996),
    ]
    records = [{"phase_log": [{"phase": "plan", "started": "2025-11-29T20:59:59.000000Z", "seconds": 0.1}]},
               {"phase_log": [{"phase": "switch", "started": "2025-11-29T21:00:01.500000Z", "seconds": 0.25}]}]
    spans = charts.engine_spans(records, since_epoch=wall_began)
    assert spans == [("switch", wall_began + 1.5, wall_began + 1.75)]  # the earlier run's plan is not this deploy's
    saved = charts.save_timeline(tmp_path / "t.json", results, began, 503.0, wall_began, spans, "x")
    assert json.loads((tmp_path / "t.json").read_text()) == saved
    assert saved["deploy"] == [0.0, 3.0] and saved["releases"] == ["v1", "v2"]
    assert saved["phases"] == [["switch", 1.5, 1.75]]
    assert saved["requests"] == [[-0.5, 200, 0], [1.25, 502, None], [1.5, 0, None], [2.0, 200, 1]]
    model = charts.timeline_model(saved, -1.0, 3.0, width=0.5)
    assert model["failed"][4:6] == [1, 1] and sum(model["failed"]) == 2 and model["failed_by_status"] == {
        "HTTP 502": 1, "connection error": 1}
    assert model["ok"]["v1"][1] == 1 and model["ok"]["v2"][6] == 1 and model["longest_gap"] == 2.5
