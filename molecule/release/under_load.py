"""Load through each server's nginx while side_effect.yml rolls back and deploys again (issue 16:
a deploy under load on Debian 12 and on Debian 13, in one scenario).

Started in the background by side_effect.yml on the controller; sends GETs (bench/loadgen.py) to
port 80 of each server container at its address on the test-bed network greenlight-test, with the
site's server name as Host header, until the stop file appears (or 10 minutes pass). Writes
<dir>/started once every server answered a first request, then <dir>/summary.json:
{container: {"requests", "failed", "errors", "by_release", "releases_in_order"}}, which
tests/test_release.py checks.

    python under_load.py --dir DIR --host-header NAME CONTAINER [CONTAINER...]
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "bench"))

from loadgen import LoadGenerator  # noqa: E402

NETWORK = "greenlight-test"


def address(container: str) -> str:
    template = '{{ (index .NetworkSettings.Networks "%s").IPAddress }}' % NETWORK
    return subprocess.run(["docker", "inspect", "-f", template, container], capture_output=True, text=True,
                          check=True).stdout.strip()


def releases_in_order(results: list) -> list[str]:
    """The releases that answered, in the order they took over (consecutive repeats folded)."""
    order: list[str] = []
    for result in sorted(results, key=lambda r: r[0]):
        if result[3] is None and 200 <= result[1] < 300 and result[2] and (not order or order[-1] != result[2]):
            order.append(result[2])
    return order


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True, type=pathlib.Path)
    parser.add_argument("--host-header", required=True)
    parser.add_argument("containers", nargs="+")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    stop_file = args.dir / "stop"
    loads = {name: LoadGenerator(80, host=address(name), host_header=args.host_header, threads=2, pause=0.1,
                                 max_requests=100000, max_seconds=600).start()
             for name in args.containers}
    deadline = time.monotonic() + 60
    while not all(load.results for load in loads.values()):
        if time.monotonic() > deadline:
            break  # the summary shows which server never answered
        time.sleep(0.1)
    (args.dir / "started").write_text("started\n")
    deadline = time.monotonic() + 600
    while not stop_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    summary = {}
    for name, load in loads.items():
        load.stop()
        summary[name] = dict(load.summary(), releases_in_order=releases_in_order(load.results))
    (args.dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
