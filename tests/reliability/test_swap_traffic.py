"""Promises about traffic during a swap on a real server (setup.yaml's nginx, deploy.yaml):
a long request in flight on the old release completes, and the old container gets SIGTERM only
after nginx stopped sending it requests."""

from __future__ import annotations

import datetime
import json
import re
import threading
import time
import typing as t

import pytest

from server_under_test import UPSTREAM_FILE, LoadGenerator, Server

pytestmark = pytest.mark.docker


def server_time(server: Server) -> float:
    return float(server.sh("date +%s.%N").stdout)


def parse_time(stamp: str) -> float:
    """RFC 3339 with up to nanoseconds (docker logs -t) -> epoch seconds."""
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z$", stamp)
    assert match, stamp
    base = datetime.datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return base.timestamp() + float("0." + (match.group(2) or "0"))


def sigterms(server: Server, container_id: str, since: float) -> list[float]:
    """Times (epoch) Docker sent SIGTERM to the container since `since`."""
    out = server.sh("docker events --since %.3f --until %.3f --filter container=%s --filter event=kill "
                    "--format '{{json .}}'" % (since, server_time(server), container_id)).stdout
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [e["timeNano"] / 1e9 for e in events if (e.get("Actor") or {}).get("Attributes", {}).get("signal") == "15"]


def upstream_switched_at(server: Server) -> float:
    return float(server.sh("stat -c %%.9Y %s" % UPSTREAM_FILE).stdout)


def test_long_request_in_flight_completes_during_swap(settled: Server) -> None:
    """From the moment the new release starts until the upstream switch, a GET /slow/?seconds=10
    goes out through nginx every 0.5 s. Every one of them answers 200 with its full body; the ones
    the old release took are still in flight when the switch happens, and at least one of them
    when the old container gets SIGTERM."""
    server = settled
    old, new = server.live_release(), server.other_release()
    [old_web] = server.running_web()
    since = server_time(server)
    switched_before = upstream_switched_at(server)
    deploy = server.start_playbook("deploy.yaml", extra_vars={"app_image_tag": new})
    requests: list[dict[str, t.Any]] = []

    def slow_request(record: dict[str, t.Any]) -> None:
        record["sent"] = time.time()
        try:
            record["answer"] = server.get("/slow/?seconds=10", timeout=60)
        except OSError as exc:  # reported below
            record["error"] = "%s: %s" % (type(exc).__name__, exc)
        record["done"] = time.time()

    threads = []
    try:
        server.wait_for_phase(["start", "health"])
        deadline = time.monotonic() + 120
        while upstream_switched_at(server) == switched_before and deploy.proc.poll() is None:
            assert time.monotonic() < deadline, "the upstream was never switched"
            record: dict[str, t.Any] = {}
            requests.append(record)
            threads.append(threading.Thread(target=slow_request, args=(record,)))
            threads[-1].start()
            time.sleep(0.5)
        run = deploy.finish()
        for thread in threads:
            thread.join(60)
    finally:
        if deploy.proc.poll() is None:
            deploy.proc.kill()
    assert run.rc == 0, run.output[-3000:]
    assert requests, "no slow request went out before the switch"
    for record in requests:
        assert "error" not in record, record
        status, release, body = record["answer"]
        assert status == 200 and release in (old, new), (status, release, body[:300])
        assert json.loads(body) == {"slept": 10.0, "release": release}
    on_old = [r for r in requests if r["answer"][1] == old]
    assert on_old, "no slow request reached the old release (all went to %s)" % new
    switched = upstream_switched_at(server)
    assert all(r["sent"] < switched < r["done"] for r in on_old), "the switch did not happen while in flight"
    [term] = sigterms(server, old_web["id"], since)
    assert any(r["sent"] < term < r["done"] for r in on_old), (
        "no request on the old release was in flight when it got SIGTERM at %.2f: %s" % (
            term, [(round(r["sent"], 2), round(r["done"], 2)) for r in on_old]))
    server.wait_release(new)


# gunicorn.conf.py of the example app: '%(h)s "%(r)s" %(s)s %(b)s %(D)sus "%(a)s"'
ACCESS_LINE = re.compile(r'^(\S+) "(?P<request>[A-Z]+ \S+ HTTP/[\d.]+)" (?P<status>\d+) \S+ (?P<micros>\d+)us ')


def test_old_container_gets_sigterm_only_after_proxy_stopped_sending(settled: Server) -> None:
    """Under load: every request the old container served (its gunicorn access log, start =
    log time - duration) started before Docker sent it SIGTERM, and the SIGTERM came after the
    upstream switch; no request failed."""
    server = settled
    old, new = server.live_release(), server.other_release()
    [old_web] = server.running_web()
    since = server_time(server)
    load = LoadGenerator(server.port, threads=8, rate=100, max_seconds=300, paths=("/health", "/")).start()
    try:
        time.sleep(2)
        run = server.deploy(new)
        time.sleep(1)
    finally:
        load.stop()
    assert run.rc == 0, run.output[-3000:]
    summary = load.summary()
    assert load.failures == [], summary
    assert summary["by_release"].get(old, 0) > 50 and summary["by_release"].get(new, 0) > 50, summary

    [term] = sigterms(server, old_web["id"], since)
    switched = upstream_switched_at(server)
    assert since < switched < term, "SIGTERM (%.3f) before the upstream switch (%.3f)" % (term, switched)
    logs = server.sh("docker logs -t --since %.3f %s 2>&1" % (since, old_web["id"])).stdout
    starts = []
    for line in logs.splitlines():
        stamp, _sep, rest = line.partition(" ")
        match = ACCESS_LINE.match(rest)
        if match:
            starts.append(parse_time(stamp) - int(match.group("micros")) / 1e6)
    assert len(starts) > 50, "the old container's access log shows too few requests:\n%s" % logs[-2000:]
    late = [s for s in starts if s >= term]
    assert late == [], "%d request(s) reached the old container after its SIGTERM (%.3f): %s" % (
        len(late), term, late[:5])
    server.wait_release(new)
