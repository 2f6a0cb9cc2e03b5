# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Drain: after the switch, let the proxy finish what it sent to the old release.

The switch reloads nginx gracefully: new workers route to the new port, old workers finish the
requests they hold and exit. The old release is stopped only once nothing can still reach it:
:func:`drain` waits (``drain_until_idle``, the default) until this network namespace holds no TCP
connection to the old port and no nginx worker is still "shutting down" (read from /proc, no
nginx API needed), at least half a second and at most ``drain_seconds``; or, with
``drain_until_idle: false``, a fixed ``drain_seconds``. The result (``seconds``, ``idle``,
``connections``, ``workers_shutting_down``) is the swap's result key ``drain``.
"""

from __future__ import annotations

import os
import time
import typing as t

TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
TCP_ESTABLISHED = "01"
TCP_SYN_SENT = "02"
NGINX_SHUTTING_DOWN = b"nginx: worker process is shutting down"


def _port_of(address: str) -> int:
    """The port of a /proc/net/tcp address field such as 0100007F:1F41."""
    return int(address.rsplit(":", 1)[1], 16)


def connections_to_port(port: int, tables: t.Sequence[str] = TCP_TABLES) -> int:
    """Open TCP connections of this network namespace to or from a local port: the proxy's
    (ESTABLISHED or SYN_SENT towards the port) and the accepting side's (ESTABLISHED on it)."""
    count = 0
    for table in tables:
        try:
            with open(table, encoding="ascii") as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) < 4:
                continue
            try:
                local, remote = _port_of(fields[1]), _port_of(fields[2])
            except (IndexError, ValueError):
                continue
            state = fields[3]
            if (remote == port and state in (TCP_ESTABLISHED, TCP_SYN_SENT)) or \
                    (local == port and state == TCP_ESTABLISHED):
                count += 1
    return count


def nginx_workers_shutting_down(proc: str = "/proc") -> int:
    """nginx workers told to quit by a reload that still finish requests (they exit when done)."""
    count = 0
    try:
        entries = os.listdir(proc)
    except OSError:
        return 0
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc, entry, "cmdline"), "rb") as handle:
                if handle.read(len(NGINX_SHUTTING_DOWN)) == NGINX_SHUTTING_DOWN:
                    count += 1
        except OSError:
            continue
    return count


def wait_drained(port: int | None, max_seconds: float, min_seconds: float = 0.5, interval: float = 0.05,
                 tables: t.Sequence[str] = TCP_TABLES, proc: str = "/proc") -> dict[str, t.Any]:
    """After a graceful reload, wait until nothing can still reach the old release: no TCP
    connection to its port and no nginx worker still shutting down, but at least `min_seconds`
    (nginx tells its old workers to quit ~0.1 s after the reload; a request they accepted
    before that opens its upstream connection a moment later) and at most `max_seconds`."""
    started = time.monotonic()
    floor = min(min_seconds, max_seconds)
    while True:
        elapsed = time.monotonic() - started
        connections = connections_to_port(port, tables) if port else 0
        workers = nginx_workers_shutting_down(proc)
        idle = connections == 0 and workers == 0
        if (idle and elapsed >= floor) or elapsed >= max_seconds:
            return {"seconds": round(elapsed, 3), "idle": idle, "connections": connections,
                    "workers_shutting_down": workers}
        time.sleep(min(interval, max(0.0, max_seconds - elapsed)))


def drain(opts: t.Any, port: t.Any) -> dict[str, t.Any]:
    """The drain phase for the release that served on `port` (SwapOptions `opts`): until the proxy
    holds no connection to it (drain_until_idle), at most drain_seconds; or a fixed drain_seconds."""
    if not opts.drain_until_idle:
        time.sleep(opts.drain_seconds)
        return {"seconds": opts.drain_seconds, "idle": None}
    try:
        port = int(port) if port is not None else None
    except (TypeError, ValueError):
        port = None
    return wait_drained(port, opts.drain_seconds)
