# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The audit log (releases.jsonl): one JSON line per run, appended whole or not at all."""

from __future__ import annotations

import datetime
import errno
import getpass
import json
import os
import socket
import typing as t

from .paths import open_state_file
from .redact import redact_free_text


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def current_actor(actor: t.Optional[str] = None) -> dict[str, t.Any]:
    try:
        user = os.environ.get("SUDO_USER") or getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    info = {"user": user, "host": socket.gethostname(), "pid": os.getpid()}
    if actor:
        info["by"] = actor
    return info


def audit_record(result: dict[str, t.Any], app_name: str, actor: dict[str, t.Any],
                 env: t.Sequence[str] = ()) -> dict[str, t.Any]:
    """The line appended to releases.jsonl (the module returns the same fields), every env value
    redacted from the texts an app or a failure can put there (FREE_TEXT_KEYS, see redact())."""
    keys = ("action", "changed", "release", "previous_release", "image", "image_id", "image_digest", "live_port",
            "container_id", "container_name", "services", "snapshot", "phases", "health_attempts", "rolled_back",
            "failed_phase", "error", "adopted", "proxy_uncertain", "stopping_old", "phase_log")
    record = {"time": utc_now(), "app": app_name, "actor": actor,
              "result": "failed" if result.get("failed_phase") else "ok"}
    for key in keys:
        if key in result:
            record[key] = result[key]
    if result.get("failed_phase") and result.get("progress"):
        record["progress"] = result["progress"]  # how far the failed phase got
    return redact_free_text(record, env)


def append_jsonl(path: str, record: dict[str, t.Any]) -> None:
    """Append one JSON line: whole or not at all (a short write on a full disk is cut back off)."""
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, mode=0o750, exist_ok=True)
    line = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")
    fd = open_state_file(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        if start and os.pread(fd, 1, start - 1) != b"\n":
            line = b"\n" + line  # a torn line (an older version killed mid-write) stays on its own
        written = 0
        try:
            while written < len(line):  # O_APPEND: each write lands at the end
                count = os.write(fd, line[written:])
                if count <= 0:
                    raise OSError(errno.EIO, "the write made no progress")
                written += count
            os.fsync(fd)
        except OSError as exc:
            if written and os.fstat(fd).st_size == start + written:
                os.ftruncate(fd, start)  # nobody appended meanwhile: take the partial line back
            raise OSError(exc.errno, "cannot append to %s (%s); the line was not written"
                          % (path, exc.strerror or exc)) from exc
    finally:
        os.close(fd)


def read_records(path: str, limit: int | None = None) -> list[dict[str, t.Any]]:
    """The records of releases.jsonl, oldest first (the last `limit`); torn lines are skipped.
    Never through a link the deploy user planted (UnsafePathError): root would show another file."""
    try:
        with os.fdopen(open_state_file(path, os.O_RDONLY), encoding="utf-8") as handle:
            lines = handle.readlines()
    except FileNotFoundError:
        return []
    records = []
    if limit is not None:
        lines = lines[-limit:] if limit > 0 else []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
