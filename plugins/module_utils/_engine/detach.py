# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Run work in a detached process that outlives the caller (the background stop of the old release).

Double fork: the grandchild is adopted by init, in its own session, with stdin/stdout/stderr on
/dev/null and every other descriptor closed except the ones it is told to keep (the deploy lock's),
so nothing that waits for the caller's output (Ansible's module pipes, ssh, docker exec) waits for
it. It tells the caller its pid through a pipe once `ready` has run, so the caller returns only
when the grandchild has taken over (e.g. written itself into the lock file)."""

from __future__ import annotations

import os
import typing as t


def _detach_stdio(keep: t.Sequence[int]) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        if fd != devnull:
            os.dup2(devnull, fd)
    if devnull > 2:
        os.close(devnull)
    try:
        highest = os.sysconf("SC_OPEN_MAX")
    except (OSError, ValueError):
        highest = 65536
    low = 3
    for fd in sorted(set(k for k in keep if k >= 3)):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, max(low, int(highest)))


def spawn_detached(ready: t.Callable[[], None], work: t.Callable[[], int], keep: t.Sequence[int] = ()) -> int:
    """Run ready() then work() in a detached grandchild; return its pid once ready() returned.
    Raises OSError when the grandchild could not be started or died before it was ready (then
    the caller still owns everything it owned: nothing was handed over)."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # first child: a new session, fork again, exit (the grandchild cannot get a terminal)
        code = 1
        try:
            os.close(read_end)
            os.setsid()
            if os.fork() == 0:
                code = _grandchild(ready, work, list(keep) + [write_end], write_end)
            else:
                code = 0
        finally:
            os._exit(code)  # never back into the caller's code (no atexit, no buffered output)
    os.close(write_end)
    try:
        os.waitpid(child, 0)
        data = b""
        while True:
            chunk = os.read(read_end, 64)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(read_end)
    if not data.strip().isdigit():
        raise OSError("the background process died before it took over")
    return int(data)


def _grandchild(ready: t.Callable[[], None], work: t.Callable[[], int], keep: list[int], write_end: int) -> int:
    try:
        _detach_stdio(keep)
        ready()
        os.write(write_end, str(os.getpid()).encode("ascii"))
        os.close(write_end)
    except BaseException:  # the caller sees no pid and keeps its lock: it does the work itself
        return 1
    try:
        return work()
    except BaseException:
        return 1
