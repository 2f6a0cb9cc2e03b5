"""HTTP load generator shared by the benchmarks (bench/run.py) and the test suites
(tests/integration, tests/reliability, molecule/release): standard library only, 127.0.0.1 or a
test-bed container's address only, bounded in requests and seconds so it always stops by itself.

Threads send GETs through a proxy: half reuse one keep-alive connection, half open a new
connection per request. Every request is recorded as a tuple
``(done, status, release, error, kind, latency, started)`` (monotonic seconds; ``status`` 0 and
``error`` set on a connection error; ``release`` from the ``X-Release`` header).

Like every real HTTP client (RFC 9112 section 9.3.1), a request on a *reused* keep-alive
connection that the server closed before sending any byte is retried once on a new connection;
such retries are counted in ``stale_retries``, never hidden as successes of a failed request
(the retried request's latency includes the failed attempt).

Without ``rate`` each thread sends as fast as it can with ``pause`` seconds between requests
(the integration tests); with ``rate`` the threads together aim at ``rate`` requests per second,
each on its own fixed schedule (the benchmarks: a late request is sent at once, a thread that
falls more than a second behind skips ahead instead of bursting).
"""

from __future__ import annotations

import http.client
import threading
import time
import typing as t

Result = t.Tuple[float, int, t.Optional[str], t.Optional[str], str, float, float]


class LoadGenerator:
    """See the module docstring. ``start()``, ..., ``stop()``; then ``results``, ``failures``,
    ``summary()`` and :func:`window_stats`."""

    def __init__(self, port: int, threads: int = 6, max_requests: int = 20000, max_seconds: float = 120,
                 paths: tuple[str, ...] = ("/health", "/"), pause: float = 0.005,
                 rate: t.Optional[float] = None, host: str = "127.0.0.1", timeout: float = 10,
                 host_header: t.Optional[str] = None) -> None:
        self.port = port
        self.host = host
        # Host header to send (a proxy's server_name) when it is not the address connected to.
        self.host_header = host_header
        self.threads = threads
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.paths = paths
        self.pause = pause
        self.rate = rate
        self.timeout = timeout
        self.results: list[Result] = []
        self.stale_retries = 0
        self.started_at: t.Optional[float] = None
        self.stopped_at: t.Optional[float] = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def _record(self, item: Result) -> bool:
        with self._lock:
            self.results.append(item)
            return len(self.results) < self.max_requests

    def _worker(self, index: int) -> None:
        keep_alive = index % 2 == 0
        kind = "keep-alive" if keep_alive else "new-connection"
        conn: t.Optional[http.client.HTTPConnection] = None
        deadline = time.monotonic() + self.max_seconds
        interval = self.threads / self.rate if self.rate else None
        # Spread the threads' schedules over one interval so they do not fire together.
        next_send = time.monotonic() + (interval * index / self.threads if interval else 0)
        number = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            if interval:
                now = time.monotonic()
                if next_send > now:
                    if self._stop.wait(next_send - now):
                        break
                elif now - next_send > 1.0:
                    next_send = now
                next_send += interval
            path = self.paths[number % len(self.paths)]
            number += 1
            reused = conn is not None
            started = time.monotonic()
            item: Result
            for attempt in (1, 2):
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                try:
                    headers = {} if keep_alive else {"Connection": "close"}
                    if self.host_header:
                        headers["Host"] = self.host_header
                    conn.request("GET", path, headers=headers)
                    response = conn.getresponse()
                    response.read()
                    done = time.monotonic()
                    item = (done, response.status, response.getheader("X-Release"), None, kind, done - started,
                            started)
                    if not keep_alive or response.getheader("Connection", "").lower() == "close":
                        conn.close()
                        conn = None
                    break
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                    conn.close()
                    conn = None
                    if reused and attempt == 1:
                        with self._lock:
                            self.stale_retries += 1
                        reused = False
                        continue
                    done = time.monotonic()
                    item = (done, 0, None, "%s: %s" % (type(exc).__name__, exc), kind, done - started, started)
                    break
                except (OSError, http.client.HTTPException) as exc:
                    if conn is not None:
                        conn.close()
                    conn = None
                    done = time.monotonic()
                    item = (done, 0, None, "%s: %s" % (type(exc).__name__, exc), kind, done - started, started)
                    break
            if not self._record(item):
                break
            if self.pause and not interval:
                time.sleep(self.pause)
        if conn is not None:
            conn.close()

    def start(self) -> "LoadGenerator":
        self.started_at = time.monotonic()
        for index in range(self.threads):
            worker = threading.Thread(target=self._worker, args=(index,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def stop(self) -> "LoadGenerator":
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=30)
        self.stopped_at = time.monotonic()
        return self

    @property
    def failures(self) -> list[Result]:
        return [r for r in self.results if r[3] is not None or not 200 <= r[1] < 300]

    def summary(self) -> dict[str, t.Any]:
        releases: dict[str, int] = {}
        for result in self.results:
            releases[str(result[2])] = releases.get(str(result[2]), 0) + 1
        return {"requests": len(self.results), "failed": len(self.failures), "stale_retries": self.stale_retries,
                "by_release": releases, "errors": sorted({str(r[3] or r[1]) for r in self.failures})[:10]}

    def window_stats(self, start: float, end: float) -> dict[str, t.Any]:
        """Figures for the requests *sent* in [start, end) (monotonic seconds): see window_stats()."""
        return window_stats(self.results, start, end)


def percentile(values: list[float], fraction: float) -> t.Optional[float]:
    """Nearest-rank percentile (``fraction`` 0..1) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, int(-(-fraction * len(ordered) // 1)))  # ceil
    return ordered[min(rank, len(ordered)) - 1]


def longest_gap(results: list[Result], start: float, end: float) -> float:
    """Longest time in [start, end] without any successful (2xx) response arriving."""
    times = sorted(r[0] for r in results if r[3] is None and 200 <= r[1] < 300 and start <= r[0] <= end)
    points = [start] + times + [end]
    return max(b - a for a, b in zip(points, points[1:])) if len(points) > 1 else end - start


def window_stats(results: list[Result], start: float, end: float) -> dict[str, t.Any]:
    """Requests sent in [start, end): count, rate, failed (connection errors + non-2xx), p50/p99
    latency of the successful ones, the longest gap without a successful response, and the
    failed requests' errors and releases seen."""
    sent = [r for r in results if start <= r[6] < end]
    ok = [r for r in sent if r[3] is None and 200 <= r[1] < 300]
    failed = [r for r in sent if not (r[3] is None and 200 <= r[1] < 300)]
    latencies = [r[5] for r in ok]
    releases: dict[str, int] = {}
    for result in sent:
        releases[str(result[2])] = releases.get(str(result[2]), 0) + 1
    errors: dict[str, int] = {}
    for result in failed:
        key = result[3].split(":")[0] if result[3] else "HTTP %d" % result[1]
        errors[key] = errors.get(key, 0) + 1
    seconds = max(end - start, 1e-9)
    return {
        "seconds": round(end - start, 3),
        "sent": len(sent),
        "rate": round(len(sent) / seconds, 1),
        "failed": len(failed),
        "errors": errors,
        "by_release": releases,
        "by_kind": {kind: sum(1 for r in sent if r[4] == kind) for kind in ("keep-alive", "new-connection")},
        "p50_ms": None if not latencies else round(percentile(latencies, 0.50) * 1000, 1),
        "p99_ms": None if not latencies else round(percentile(latencies, 0.99) * 1000, 1),
        "max_ms": None if not latencies else round(max(latencies) * 1000, 1),
        "longest_gap_s": round(longest_gap(results, start, end), 3),
    }
