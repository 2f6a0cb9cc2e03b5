# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The deploy lock: one run at a time per app, and who holds it doing what (its run journal)."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
import typing as t

from .audit import utc_now
from .errors import LockTimeout, UnsafePathError
from .paths import open_state_file

# The holder phase of a run's background stop of its old release (phases_traffic.py): later runs
# wait for it (up to stop_grace_seconds + 5 s) instead of failing.
BACKGROUND_PHASE = "stop_old"
# A holder that wrote "released" unlocks right after: waited for this much longer at most.
RELEASING_GRACE = 2.0


def finishing(holder: t.Any) -> bool:
    """A holder worth waiting for rather than reporting: a previous run's background stop of its
    old release (phase stop_old), or one that wrote "released" and unlocks right now."""
    return isinstance(holder, dict) and (holder.get("phase") == BACKGROUND_PHASE or bool(holder.get("released")))


def holder_message(lock_file: str, holder: t.Optional[dict[str, t.Any]], waited: float) -> str:
    """The message a blocked deploy shows: who holds the lock and what it is doing."""
    if not holder:
        return "another deploy holds %s (holder details unreadable); waited %.1fs" % (lock_file, waited)
    return ("another deploy holds %s: pid %s (user %s on %s), %s of release %s, phase %s, since %s; waited %.1fs. "
            "Wait for it to finish, or re-run later; the lock frees itself when that process ends."
            % (lock_file, holder.get("pid"), holder.get("user"), holder.get("host"), holder.get("action", "deploy"),
               holder.get("release"), holder.get("phase"), holder.get("since"), waited))


class DeployLock:
    """flock(2) on the lock file: the kernel frees it when the holder dies, so it cannot go stale.
    The file's content is the holder's details (JSON), rewritten at every phase."""

    def __init__(self, path: str, info: dict[str, t.Any]) -> None:
        self.path = path
        self.info = dict(info)
        self.fd: t.Optional[int] = None
        self.previous: t.Optional[dict[str, t.Any]] = None

    @staticmethod
    def read_holder(path: str) -> t.Optional[dict[str, t.Any]]:
        for _attempt in range(5):
            try:
                with os.fdopen(open_state_file(path, os.O_RDONLY), encoding="utf-8") as handle:
                    content = handle.read()
            except (FileNotFoundError, UnsafePathError):
                return None
            if content.strip():
                try:
                    return json.loads(content)
                except ValueError:
                    pass
            time.sleep(0.02)  # the holder may be rewriting it right now
        return None

    def acquire(self, timeout: float, poll: float = 0.1, background_wait: float = 0.0) -> None:
        """Wait up to `timeout` s for the lock; up to `background_wait` s (when longer) while the
        holder is only a previous run's background stop of its old release (phase stop_old)."""
        parent = os.path.dirname(self.path)
        if parent:
            os.makedirs(parent, mode=0o750, exist_ok=True)
        fd = open_state_file(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        started = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise
            waited = time.monotonic() - started
            if waited >= timeout and waited >= self._patience(timeout, background_wait):
                os.close(fd)
                raise LockTimeout(holder_message(self.path, self.read_holder(self.path), waited))
            time.sleep(poll)
        self.fd = fd
        content = os.pread(fd, 65536, 0)
        try:
            previous = json.loads(content.decode("utf-8")) if content.strip() else None
        except ValueError:
            previous = None
        # A holder that ended cleanly marks the file "released"; anything else is an interrupted run.
        self.previous = previous if isinstance(previous, dict) and not previous.get("released") else None
        self._write()

    def _patience(self, timeout: float, background_wait: float) -> float:
        """How long to wait for the current holder: longer for a previous run's background stop
        (phase stop_old), and a moment longer for a holder that already wrote "released" (it
        unlocks right after writing that)."""
        holder = self.read_holder(self.path)
        if not isinstance(holder, dict):
            return timeout
        if holder.get("released"):
            return timeout + RELEASING_GRACE
        return max(timeout, background_wait) if holder.get("phase") == BACKGROUND_PHASE else timeout

    def hand_over(self) -> None:
        """Forget the lock without unlocking it: a detached child that shares the descriptor
        (detach.py) holds it now and releases it when its work is done."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _write(self) -> None:
        if self.fd is None:
            return
        data = json.dumps(self.info, sort_keys=True).encode("utf-8")
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def update(self, **fields: t.Any) -> None:
        self.info.update(fields)
        self._write()

    def abandon(self) -> None:
        """Unlock without marking the run as ended: the next run sees what this file says as an
        interrupted run (recovered_from) and converges from it, as after a kill -9."""
        if self.fd is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.info.update({"released": True, "phase": "done", "released_at": utc_now()})
            self._write()
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def lock_holder(lock_file: str) -> dict[str, t.Any] | None:
    """The holder's details when another process holds the deploy lock, else None. Opened like the
    engine opens it (no symbolic or hard link, a regular file, owner checked: UnsafePathError)."""
    try:
        fd = open_state_file(lock_file, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _holder_details(fd) or {"pid": "unknown"}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _holder_details(fd: int) -> dict[str, t.Any] | None:
    """What the holder wrote into the lock file (read from the descriptor opened without
    following links; the holder may be rewriting it right now)."""
    for _attempt in range(5):
        content = os.pread(fd, 65536, 0).decode("utf-8", "replace")
        if content.strip():
            try:
                holder = json.loads(content)
            except ValueError:
                holder = None
            if isinstance(holder, dict):
                return holder
        time.sleep(0.02)
    return None
