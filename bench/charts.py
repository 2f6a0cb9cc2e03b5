"""Request timelines of `make bench` (issue 18): what the load generator saw, 100 ms by 100 ms
(500 ms for a run at under 100 req/s),
while greenlight.deploy and the naive script put v2 live under the same load.

bench/run.py saves one timeline per load run (:func:`save_timeline`, ``<label>.timeline.json``
beside its logs): every request (when its answer or error arrived, status, release) and the spans
of the deploy's phases (greenlight: the engine's ``phase_log`` from ``releases.jsonl``; the naive
script: its steps, timed by ``bash -x``), all in seconds from the start of the deploy command.
At the end of the run it draws them (:func:`render_bench`) into docs/img/bench-*.png, which
docs/benchmarks.md shows: successful answers per bin stacked by the release that answered,
failures stacked on top in red, the phases as shaded spans, greenlight and the naive script on
the same axes. The charts are only ever written from recorded runs, never by hand.

:func:`timeline_model` is the data model a chart is drawn from (counts per bin), so tests can
check a chart's content without reading its pixels. Plotting needs matplotlib (bench/requirements.txt,
installed by `make venv`); saving a timeline needs nothing beyond the standard library.
"""

from __future__ import annotations

import datetime
import json
import math
import typing as t
from pathlib import Path

BIN_SECONDS = 0.1
BEFORE_SECONDS = 2.0   # drawn before the deploy command starts
AFTER_SECONDS = 2.0    # and after the later of the two commands returned
FAILED_COLOUR = "#d62728"
RELEASE_COLOURS = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b")  # v1, v2, ... in the order they answered
PHASE_SHADES = ("#bdbdbd", "#e0e0e0")
LANE = (1.05, 1.6)  # the phases' lane, in multiples of the highest bar


def pixels_per_second(start: float, end: float) -> float:  # of the plot area, roughly
    return SIZE_INCHES[0] * DPI * 0.93 / max(end - start, 1e-9)
DPI = 100
SIZE_INCHES = (11.0, 3.2)  # per panel

# The charts of a bench run: file name, title, the load runs drawn (label in bench/run.py, name).
SCENARIOS = (
    ("bench-deploy.png", "Deploy v1 -> v2 under load, same server, app and nginx",
     (("greenlight-v1-v2", "greenlight.deploy (deploy.yml)"), ("naive-v1-v2", "naive script (bench/naive-deploy.sh)"))),
    ("bench-rollback.png", "Rollback v2 -> v1 under load",
     (("greenlight-rollback", "greenlight.deploy (rollback.yml)"),)),
)


# ----------------------------------------------------------------------------------------------
# Recording (bench/run.py)
# ----------------------------------------------------------------------------------------------
def epoch_of(utc_iso: str) -> float:
    """Seconds since the epoch of "2026-11-29T21:02:03.123456Z" (releases.jsonl times)."""
    return datetime.datetime.strptime(utc_iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def engine_spans(records: t.Iterable[dict[str, t.Any]], since_epoch: float) -> list[tuple[str, float, float]]:
    """(phase, start, end) in epoch seconds from the phase_log of the releases.jsonl records
    written since `since_epoch` (the deploy's own run(s) on that server)."""
    spans = []
    for record in records:
        for entry in record.get("phase_log") or []:
            if entry.get("started"):
                start = epoch_of(entry["started"])
                if start >= since_epoch:
                    spans.append((entry["phase"], start, start + float(entry["seconds"])))
    return sorted(spans, key=lambda span: span[1])


def save_timeline(path: Path, results: t.Sequence[tuple], began: float, ended: float, wall_began: float,
                  spans: t.Sequence[tuple[str, float, float]], label: str = "",
                  load_stopped: t.Optional[float] = None) -> dict[str, t.Any]:
    """Write one load run as a timeline: `results` are the load generator's records (monotonic
    times), `began`/`ended` the deploy command's start and end (monotonic), `wall_began` the
    wall clock (epoch) at `began`, `spans` the phases as (name, start, end) in epoch seconds,
    `load_stopped` when the load generator stopped (monotonic; default its last answer).
    Every time in the file is in seconds from `began`, rounded to the millisecond."""
    releases: list[str] = []
    requests = []
    for done, status, release, error, _kind, _latency, _sent in results:
        ok = error is None and 200 <= status < 300
        if ok and release not in releases:
            releases.append(release)
        requests.append([round(done - began, 3), int(status), releases.index(release) if ok else None])
    timeline = {
        "label": label,
        "deploy": [0.0, round(ended - began, 3)],
        "load_ended": round((load_stopped if load_stopped is not None
                             else max([r[0] for r in results] or [ended])) - began, 3),
        "releases": [str(r) for r in releases],
        "phases": [[name, round(start - wall_began, 3), round(end - wall_began, 3)] for name, start, end in spans],
        # [answer arrived (s), HTTP status or 0 for a connection error, index into releases or null when failed]
        "requests": sorted(requests),
    }
    path.write_text(json.dumps(timeline, separators=(",", ":")))
    return timeline


# ----------------------------------------------------------------------------------------------
# The data model of a chart
# ----------------------------------------------------------------------------------------------
def timeline_model(timeline: dict[str, t.Any], start: float, end: float,
                   width: float = BIN_SECONDS) -> dict[str, t.Any]:
    """Counts per bin of `width` seconds from `start` to `end` (seconds from the deploy's start):
    successful answers by release, failures (connection errors and non-2xx); plus the phases, the
    failures by status and the longest time without a successful answer in the window."""
    # No gap is counted after the load generator stopped (a shorter run drawn beside a longer one).
    load_ended = timeline.get("load_ended", max([r[0] for r in timeline["requests"]] or [end]))
    bins = max(1, math.ceil((end - start) / width - 1e-9))  # the last bin may reach past `end`
    releases = list(timeline["releases"])
    ok = {release: [0] * bins for release in releases}
    failed = [0] * bins
    by_status: dict[str, int] = {}
    arrivals = []
    for done, status, release in timeline["requests"]:
        index = int((done - start) // width)
        if not 0 <= index < bins:
            continue
        if release is None:
            failed[index] += 1
            key = "HTTP %d" % status if status else "connection error"
            by_status[key] = by_status.get(key, 0) + 1
        else:
            ok[releases[release]][index] += 1
            arrivals.append(done)
    points = [start] + sorted(arrivals) + [max(start, min(end, load_ended))]
    return {
        "start": start, "end": end, "width": width,
        "times": [round(start + width * i, 3) for i in range(bins)],
        "ok": ok, "failed": failed, "failed_total": sum(failed), "failed_by_status": by_status,
        "answered_total": len(arrivals),
        "longest_gap": round(max(b - a for a, b in zip(points, points[1:])), 3),
        "deploy": list(timeline["deploy"]), "load_ended": load_ended,
        "phases": [list(phase) for phase in timeline["phases"]],
    }


def _window(timelines: t.Sequence[dict[str, t.Any]]) -> tuple[float, float]:
    return -BEFORE_SECONDS, max(tl["deploy"][1] for tl in timelines) + AFTER_SECONDS


def steady_rate(timelines: t.Sequence[dict[str, t.Any]]) -> float:
    """Answers per second (any status) before the deploys started, averaged over the runs."""
    rates = []
    for tl in timelines:
        before = [r[0] for r in tl["requests"] if r[0] < 0]
        if before:
            rates.append(len(before) / max(-min(before), 1e-9))
    return sum(rates) / len(rates) if rates else 0.0


def bin_width(timelines: t.Sequence[dict[str, t.Any]]) -> float:
    """BIN_SECONDS at the bench's 200 req/s; wider bins (0.5 s) for a run at under 100 req/s, so a
    bin still holds enough answers to show a dip."""
    return BIN_SECONDS if steady_rate(timelines) >= 100 else 0.5


# ----------------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------------
def render(path: Path, title: str, panels: t.Sequence[tuple[str, dict[str, t.Any]]]) -> dict[str, t.Any]:
    """Draw the timelines of `panels` ((name, timeline), ...) one above the other on the same
    axes into the PNG `path`. Returns what was drawn: the models, the image size in pixels and
    each panel's plot area as (left, top, right, bottom) pixels from the image's top left."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot
    from matplotlib.patches import Patch

    timelines = [timeline for _name, timeline in panels]
    start, end = _window(timelines)
    width = bin_width(timelines)
    models = [(name, timeline_model(timeline, start, end, width)) for name, timeline in panels]
    # One release -> one colour across panels (v1 blue, v2 green), in the order they first answered.
    releases: list[str] = []
    for _name, model in models:
        releases += [r for r in model["ok"] if r not in releases]
    colours = {release: RELEASE_COLOURS[i % len(RELEASE_COLOURS)] for i, release in enumerate(releases)}
    top = max(max(sum(column) for column in zip(*model["ok"].values(), model["failed"])) for _n, model in models)

    figure, axes = pyplot.subplots(len(models), 1, sharex=True, sharey=True, squeeze=False,
                                   figsize=(SIZE_INCHES[0], SIZE_INCHES[1] * len(models) + 0.9), dpi=DPI)
    for (name, model), ax in zip(models, axes[:, 0]):
        # The phases: a lane above the bars, each phase shaded down to the axis.
        lane = (top * LANE[0], top * (LANE[1] - LANE[0]))
        for number, (phase, phase_start, phase_end) in enumerate(model["phases"]):
            span = max(phase_end - phase_start, 0.02)
            ax.axvspan(phase_start, phase_start + span, color=PHASE_SHADES[number % 2], alpha=0.35, linewidth=0,
                       zorder=0)
            ax.broken_barh([(phase_start, span)], lane, color=PHASE_SHADES[number % 2], linewidth=0, zorder=1)
            if span >= 0.1:
                wide = span * pixels_per_second(start, end) >= len(phase) * 6
                ax.text(phase_start + span / 2, lane[0] + lane[1] / 2, phase, ha="center", va="center",
                        fontsize=7, rotation=0 if wide else 90, color="#333333", zorder=3)
        for edge in model["deploy"]:
            ax.axvline(edge, color="#444444", linestyle="--", linewidth=0.8, zorder=1)
        if model["load_ended"] < end - 0.5:  # this run's load stopped before the drawn window ends
            ax.axvspan(model["load_ended"], end, color="#f4f4f4", linewidth=0, zorder=0)
            ax.text(model["load_ended"] + 0.3, top * 0.5, "load generator stopped", fontsize=8, color="#777777",
                    va="center", zorder=3)
        bottom = [0] * len(model["times"])
        lefts = model["times"]
        for release in releases:
            counts = model["ok"].get(release)
            if counts:
                ax.bar(lefts, counts, width=model["width"], align="edge", bottom=bottom, color=colours[release],
                       linewidth=0, zorder=2)
                bottom = [b + c for b, c in zip(bottom, counts)]
        if model["failed_total"]:
            ax.bar(lefts, model["failed"], width=model["width"], align="edge", bottom=bottom, color=FAILED_COLOUR,
                   linewidth=0, zorder=2)
        statuses = ", ".join("%s: %d" % item for item in sorted(model["failed_by_status"].items()))
        ax.set_title("%s - %d failed%s, longest gap without a 2xx answer %.2f s" % (
            name, model["failed_total"], " (%s)" % statuses if statuses else "", model["longest_gap"]),
            loc="left", fontsize=10)
        ax.set_ylabel("answers / %d ms" % round(model["width"] * 1000), fontsize=8)
        ax.set_ylim(0, top * LANE[1])
        ax.set_xlim(start, end)
        ax.tick_params(labelsize=8)
        ax.grid(axis="y", color="#eeeeee", zorder=0)
    axes[-1, 0].set_xlabel("seconds from the start of the deploy command (dashed: the command starts and returns; "
                           "shaded: its phases on the server)", fontsize=8)
    handles = [Patch(color=colours[r], label="2xx from release %s" % r) for r in releases]
    handles.append(Patch(color=FAILED_COLOUR, label="failed (connection error or non-2xx)"))
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    figure.suptitle("%s - load %.0f req/s before the deploy" % (title, steady_rate(timelines)), fontsize=11,
                    x=0.01, ha="left")
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    pixels_wide, pixels_high = figure.canvas.get_width_height()
    boxes = []
    for ax in axes[:, 0]:
        box = ax.get_window_extent()
        boxes.append((int(box.x0), int(pixels_high - box.y1), int(box.x1), int(pixels_high - box.y0)))
    pyplot.close(figure)
    return {"path": str(path), "size": (pixels_wide, pixels_high), "panels": boxes,
            "models": [model for _name, model in models]}


def render_bench(results_dir: Path, out_dir: Path) -> list[dict[str, t.Any]]:
    """The charts of SCENARIOS from the timelines a bench run saved in `results_dir`."""
    drawn = []
    for file_name, title, runs in SCENARIOS:
        panels = [(name, json.loads((results_dir / ("%s.timeline.json" % label)).read_text()))
                  for label, name in runs if (results_dir / ("%s.timeline.json" % label)).exists()]
        if panels:
            drawn.append(render(out_dir / file_name, "%s - bench run %s" % (title, results_dir.name), panels))
    return drawn


if __name__ == "__main__":  # redraw the charts of a bench run: charts.py bench/results/<stamp> [docs/img]
    import sys
    here = Path(__file__).resolve().parent
    for chart in render_bench(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else here.parent / "docs" / "img"):
        print("wrote %s (%dx%d)" % (chart["path"], chart["size"][0], chart["size"][1]))
