# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""HTTP probes of 127.0.0.1 URLs: the health check's and the proxy verify's GET, with the release
the app answers (X-Release header or a JSON "release" field)."""

from __future__ import annotations

import http.client
import json
import time
import typing as t
from urllib.parse import urlsplit

from .errors import ProxyError


def fetch_release(url: str, timeout: float = 5.0) -> tuple[int, str | None]:
    """GET a 127.0.0.1 URL; return (status, release) from X-Release or a JSON "release" field."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost"):
        raise ValueError("verify URLs must be http://127.0.0.1:<port>/..., got %r" % url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        # X-Greenlight-Probe: nginx lets this local request through maintenance mode (proxy_nginx.py).
        conn.request("GET", target, headers={"Connection": "close", "User-Agent": "greenlight-swap",
                                             "X-Greenlight-Probe": "1"})
        response = conn.getresponse()
        body = response.read(65536)
        release = response.getheader("X-Release")
        if release is None and "json" in (response.getheader("Content-Type") or ""):
            try:
                release = json.loads(body.decode("utf-8")).get("release")
            except (ValueError, AttributeError):
                release = None
        return response.status, release
    finally:
        conn.close()


def verify(url: str, expected_release: str | None, accepted_statuses: t.Sequence[int], timeout: float,
           interval: float = 0.1, consecutive: int = 3,
           on_attempt: t.Optional[t.Callable[[int], None]] = None) -> dict[str, t.Any]:
    """Poll `url` through the proxy until it answers an accepted status (from `expected_release`)
    `consecutive` times in a row: right after a reload some connections may still reach workers
    that have the old upstream, so one good answer proves little. `on_attempt(n)` before each."""
    deadline = time.monotonic() + timeout
    attempts = 0
    good = 0
    last = "no answer"
    while True:
        attempts += 1
        if on_attempt is not None:
            on_attempt(attempts)
        try:
            status, release = fetch_release(url, timeout=min(5.0, max(0.5, timeout)))
            if status in accepted_statuses and (expected_release is None or release == expected_release):
                good += 1
                if good >= consecutive:
                    return {"attempts": attempts, "status": status, "release": release}
                time.sleep(interval)
                continue
            good = 0
            last = "HTTP %d from release %s" % (status, release)
        except (OSError, http.client.HTTPException) as exc:
            good = 0
            last = "%s: %s" % (type(exc).__name__, exc)
        if time.monotonic() >= deadline:
            raise ProxyError("verify through the proxy at %s failed after %d attempts: last answer %s, expected "
                             "release %s" % (url, attempts, last, expected_release))
        time.sleep(interval)


def proxy_answer(opts: t.Any) -> t.Optional[dict[str, t.Any]]:
    """One GET of opts.proxy_verify_url (never in check mode): {url, status, release, attempts}
    when it answers with one of opts.health_statuses, else None (nginx down or the app failing:
    the caller's smoke check says so). What container_swap returns as proxy_verified when no
    swap verified the proxy in this run (a no-op, or mode prepare)."""
    if opts.check_mode or not opts.proxy_verify_url:
        return None
    try:
        status, release = fetch_release(opts.proxy_verify_url, timeout=min(5.0, opts.proxy_verify_timeout))
    except (OSError, http.client.HTTPException, ValueError):
        return None
    if status not in opts.health_statuses:
        return None
    return {"url": opts.proxy_verify_url, "status": status, "release": release, "attempts": 1}
