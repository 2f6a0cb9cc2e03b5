"""Promises about what happens while deploy.yml swaps releases on a real server (setup.yml's
nginx), all observed during one deploy (it is the slow part):

- a second deploy started meanwhile fails fast in preflight naming the running one, and changes
  nothing (the engine's own lock: tests/integration/test_swap_interrupt.py::test_two_deploys_at_once);
- a long request in flight on the old release completes although the switch happens while it
  runs, and the old container gets its SIGTERM only after it was answered (the drain ends when
  nginx holds no connection to the old release);
- the old container gets SIGTERM only after nginx stopped sending it requests, and no request
  fails under load.

The deploy gets a slow extra pre-switch command (15 s), so the second deploy surely meets it.
"""

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

SLOW_PRE_SWITCH = ["python manage.py migrate --noinput", ["python", "-c", "import time; time.sleep(15)"]]
SLOW_REQUEST_SECONDS = 10
# gunicorn.conf.py of the example app: '%(h)s "%(r)s" %(s)s %(b)s %(D)sus "%(a)s"'
ACCESS_LINE = re.compile(r'^(\S+) "(?P<request>[A-Z]+ \S+ HTTP/[\d.]+)" (?P<status>\d+) \S+ (?P<micros>\d+)us ')


def server_time(server: Server) -> float:
    return float(server.sh("date +%s.%N").stdout)


def parse_time(stamp: str) -> float:
    """RFC 3339 with up to nanoseconds (docker logs -t) -> epoch seconds."""
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z$", stamp)
    assert match, stamp
    base = datetime.datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return base.timestamp() + float("0." + (match.group(2) or "0"))


def upstream_switched_at(server: Server) -> float:
    return float(server.sh("stat -c %%.9Y %s" % UPSTREAM_FILE).stdout)


class SlowRequests:
    """GET /slow/?seconds=10 through nginx, a new one every 2 s (so about 5 are in flight at any
    time: the old release's 8 gunicorn threads keep room for the load)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.records: list[dict[str, t.Any]] = []
        self.threads: list[threading.Thread] = []

    def _one(self, record: dict[str, t.Any]) -> None:
        record["sent"] = time.time()
        try:
            record["answer"] = self.server.get("/slow/?seconds=%d" % SLOW_REQUEST_SECONDS, timeout=60)
        except OSError as exc:  # reported by the test
            record["error"] = "%s: %s" % (type(exc).__name__, exc)
        record["done"] = time.time()

    def tick(self) -> None:
        last = max((r.get("sent", 0) for r in self.records), default=0)
        if time.time() - last >= 2:
            record: dict[str, t.Any] = {"sent": time.time()}
            self.records.append(record)
            self.threads.append(threading.Thread(target=self._one, args=(record,), daemon=True))
            self.threads[-1].start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(60)


@pytest.fixture(scope="module")
def swap(server: Server) -> dict[str, t.Any]:
    assert server.lock_is_free()
    old, new = server.live_release(), server.other_release()
    [old_web] = server.running_web()
    since = server_time(server)
    switched_before = upstream_switched_at(server)
    evidence: dict[str, t.Any] = {"old": old, "new": new, "old_web": old_web}
    load = LoadGenerator(server.port, threads=8, rate=100, max_seconds=400, paths=("/health", "/")).start()
    slow = SlowRequests(server)
    try:
        time.sleep(2)
        first = server.start_playbook("deploy.yml", extra_vars={
            "app_image_tag": new, "deploy_script_pre_switch_commands": SLOW_PRE_SWITCH})
        try:
            # A second deploy while the first one holds the lock.
            holder = server.wait_for_phase(["pre_switch"])
            webs = [c for c in server.containers() if c["service"] == "web"]
            started = time.monotonic()
            evidence["second"] = server.deploy(old)
            evidence["second_seconds"] = time.monotonic() - started
            evidence["holder"], evidence["holder_after_second"] = holder, server.lock_holder() or {}
            evidence["webs_before_second"] = webs
            evidence["webs_after_second"] = [c for c in server.containers() if c["service"] == "web"]
            # Long requests until the upstream is switched.
            deadline = time.monotonic() + 180
            while upstream_switched_at(server) == switched_before and first.proc.poll() is None:
                assert time.monotonic() < deadline, "the upstream was never switched"
                slow.tick()
                time.sleep(0.2)
            evidence["first"] = first.finish()
        finally:
            if first.proc.poll() is None:
                first.proc.kill()
        slow.join()
        time.sleep(1)
    finally:
        load.stop()
    evidence["slow"] = slow.records
    evidence["load"] = load
    evidence["switched"] = upstream_switched_at(server)
    out = server.sh("docker events --since %.3f --until %.3f --filter container=%s --filter event=kill "
                    "--format '{{json .}}'" % (since, server_time(server), old_web["id"])).stdout
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    evidence["sigterms"] = [e["timeNano"] / 1e9 for e in events
                            if (e.get("Actor") or {}).get("Attributes", {}).get("signal") == "15"]
    evidence["old_logs"] = server.sh("docker logs -t --since %.3f %s 2>&1" % (since, old_web["id"])).stdout
    return evidence


def test_second_deploy_fails_fast_naming_the_running_one(settled: Server, swap: dict[str, t.Any]) -> None:
    server, second, holder = settled, swap["second"], swap["holder"]
    still = swap["holder_after_second"]
    assert (still.get("pid"), still.get("phase")) == (holder["pid"], "pre_switch"), \
        "the first deploy moved on before the second one ended: this run proves nothing (%s)" % still
    assert second.rc != 0, second.output[-3000:]
    flat = second.flat()
    # The message names the lock and everything the holder wrote into it.
    for part in ("Another deploy of todo holds /opt/todo/deploy.lock", server.name, "release %s" % swap["new"],
                 "pid %s" % holder["pid"], "user %s" % holder["user"], "phase pre_switch", holder["since"]):
        assert part in flat, (part, flat[-3000:])
    assert "Preflight |" in (second.failed_task() or ""), second.failed_task()
    assert re.search(r"TASK \[(?:greenlight\.deploy\.release : )?Pull \|", second.output) is None
    assert swap["second_seconds"] < 30, "the second deploy waited %.0fs instead of failing fast" % swap["second_seconds"]
    assert swap["webs_after_second"] == swap["webs_before_second"]
    assert swap["first"].rc == 0, swap["first"].output[-3000:]
    server.wait_release(swap["new"])


def test_long_request_in_flight_completes_during_swap(settled: Server, swap: dict[str, t.Any]) -> None:
    old, new, requests = swap["old"], swap["new"], swap["slow"]
    assert swap["first"].rc == 0, swap["first"].output[-3000:]
    assert requests, "no slow request went out before the switch"
    for record in requests:
        assert "error" not in record, record
        status, release, body = record["answer"]
        assert status == 200 and release in (old, new), (status, release, body[:300])
        assert json.loads(body) == {"slept": float(SLOW_REQUEST_SECONDS), "release": release}
    on_old = [r for r in requests if r["answer"][1] == old]
    assert on_old, "no slow request reached the old release"
    assert any(r["sent"] < swap["switched"] < r["done"] for r in on_old), "none was in flight at the switch"
    [term] = swap["sigterms"]
    last_answer = max(r["done"] for r in on_old)
    # 0.2 s: the client reads the answer a moment after nginx's worker closed its upstream connection.
    assert term > last_answer - 0.2, (
        "the old release got SIGTERM at %.2f while a request on it was in flight until %.2f: %s" % (
            term, last_answer, [(round(r["sent"], 2), round(r["done"], 2)) for r in on_old]))


def test_old_container_gets_sigterm_only_after_proxy_stopped_sending(settled: Server, swap: dict[str, t.Any]) -> None:
    """Every request the old container served (its gunicorn access log, start = log time -
    duration) started before Docker sent it SIGTERM; the SIGTERM came after the upstream switch;
    no request failed under load."""
    load, old, new = swap["load"], swap["old"], swap["new"]
    assert swap["first"].rc == 0, swap["first"].output[-3000:]
    summary = load.summary()
    assert load.failures == [], summary
    assert summary["by_release"].get(old, 0) > 50 and summary["by_release"].get(new, 0) > 50, summary
    [term] = swap["sigterms"]
    assert swap["switched"] < term, "SIGTERM (%.3f) before the upstream switch (%.3f)" % (term, swap["switched"])
    starts = []
    for line in swap["old_logs"].splitlines():
        stamp, _sep, rest = line.partition(" ")
        match = ACCESS_LINE.match(rest)
        if match:
            starts.append(parse_time(stamp) - int(match.group("micros")) / 1e6)
    assert len(starts) > 50, "the old container's access log shows too few requests:\n%s" % swap["old_logs"][-2000:]
    late = [s for s in starts if s >= term]
    assert late == [], "%d request(s) reached the old container after its SIGTERM (%.3f): %s" % (
        len(late), term, late[:5])
