# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Mode restore: put back the database snapshot taken just before `release` was replaced (the
database as that release left it; writes made since are lost). `release` (default: the live
one) must be live: roll back to it first. The snapshot is the one releases.jsonl names, accepted
only as a regular file of backups_dir named like the engine names snapshots (the deploy user can
write that log; root copies the snapshot over the database). The database as it is now is kept
first (a safety snapshot), under the deploy lock; the run is recorded in releases.jsonl."""

from __future__ import annotations

import datetime
import os
import sqlite3
import stat
import typing as t

from .audit import append_jsonl, read_records, utc_now
from .errors import SwapError, UnsafePathError
from .lock import DeployLock
from .sqlite import sqlite_restore, sqlite_snapshot
from .state import live_release

ACTION = "restore-database"
_READ = object()


class RestoreRefused(SwapError):
    """Refused before anything was read or changed (no database configured, release not live)."""


def snapshot_before_leaving(records: list[dict[str, t.Any]], release: str) -> dict[str, t.Any] | None:
    """The newest successful record that replaced `release` and took a snapshot first: its snapshot
    is the database as `release` left it, before the next release's pre-switch commands ran."""
    for record in reversed(records):
        if record.get("result") == "ok" and record.get("previous_release") == release \
                and record.get("release") != release and record.get("snapshot"):
            return record
    return None


def snapshot_in_backups(snapshot: t.Any, backups_dir: str) -> str:
    """The snapshot path of a releases.jsonl record, accepted only as a regular file (no symlink)
    directly in the backup directory: the deploy user could write that log on a server app_host has
    not made it root's yet, and root copies the snapshot over the database."""
    name = os.path.basename(str(snapshot))
    if not isinstance(snapshot, str) or os.path.normpath(os.path.dirname(snapshot)) != os.path.normpath(backups_dir) \
            or name in ("", ".", ".."):
        raise SwapError("refusing snapshot %r from the releases log: not a file of the backup directory %s"
                        % (snapshot, backups_dir))
    try:
        info = os.lstat(snapshot)
    except FileNotFoundError:
        return snapshot  # reported as pruned by the caller
    if not stat.S_ISREG(info.st_mode):
        raise SwapError("refusing snapshot %s: not a regular file of the backup directory %s (a symlink?)"
                        % (snapshot, backups_dir))
    return snapshot


def find_snapshot(opts: t.Any, release: str) -> tuple[str, dict[str, t.Any]]:
    """(snapshot path, the record that took it) for `release`; SwapError when there is none to use."""
    try:
        records = read_records(opts.releases_log)
    except UnsafePathError as exc:
        raise SwapError(str(exc))
    record = snapshot_before_leaving(records, release)
    if not record:
        raise SwapError("%s has no snapshot taken when release %s was replaced; nothing restored"
                        % (opts.releases_log, release))
    snapshot = snapshot_in_backups(record["snapshot"], opts.backups_dir)
    name = os.path.basename(snapshot)
    if not name.startswith(opts.app_name + "-") or not name.endswith(".sqlite3") \
            or os.path.normpath(os.path.dirname(snapshot)) != os.path.normpath(opts.backups_dir):
        raise SwapError("%s names %r, which is not a snapshot in %s; nothing restored (check who edited the log)"
                        % (opts.releases_log, snapshot, opts.backups_dir))
    if not os.path.exists(snapshot):
        raise SwapError("snapshot %s (taken before release %s) is gone (pruned, backups_to_keep=%d); nothing "
                        "restored" % (snapshot, record.get("release"), opts.backups_to_keep))
    return snapshot, record


def run_restore(run: t.Any, live: t.Any = _READ) -> dict[str, t.Any]:
    """Mode restore; returns the result, raises SwapError (RestoreRefused: nothing was looked at)
    with the result attached. `live`: the live release when the caller read it already."""
    opts, result = run.opts, run.result
    host = run.actor["host"]
    result.set(action=ACTION, release=opts.release)
    phase = "plan"
    try:
        with run.timed("plan"):
            if not opts.sqlite_path:
                raise RestoreRefused("no sqlite_path is configured, so there is no database snapshot to restore")
            if live is _READ:
                live = live_release(run.docker, opts.app_name, opts.upstream_file)
            release = opts.release or live
            if not release or live != release:
                raise RestoreRefused("refusing to restore the database: release %s must be live first (live: %s); "
                                     "roll back to it first (deploy.sh rollback %s, or mode rollback)"
                                     % (release, live, release or "<release>"))
            snapshot, record = find_snapshot(opts, release)
        result.set(release=release, snapshot=snapshot, replaced_by=record.get("release"))
        if opts.check_mode:
            result.set(changed=True, phases=run.phases)
            return result.final("would-restore", live, False, "would restore %s into %s on %s (the database as "
                                "release %s left it, before release %s migrated); writes made since are lost"
                                % (snapshot, opts.sqlite_path, host, release, record.get("release")))
        phase = "lock"
        with run.timed("lock"):
            run.lock = DeployLock(opts.lock_file, dict(run.actor, app=opts.app_name, release=release, action=ACTION,
                                                       since=utc_now(), phase="lock"))
            run.lock.acquire(opts.lock_timeout, background_wait=opts.stop_grace_seconds + 5)
        phase = "restore"
        with run.timed("restore"):
            if os.path.lexists(opts.sqlite_path):  # a dangling link is refused by the snapshot, not skipped
                stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
                safety = os.path.join(opts.backups_dir, "%s-%s-before-restore.sqlite3" % (opts.app_name, stamp))
                sqlite_snapshot(opts.sqlite_path, safety)
                result.set(safety_snapshot=safety)
            sqlite_restore(snapshot, opts.sqlite_path)
        result.set(changed=True, phases=run.phases)
        line = {"time": utc_now(), "app": opts.app_name, "actor": run.actor, "result": "ok"}
        kept = ("action", "changed", "release", "snapshot", "replaced_by", "safety_snapshot", "phases")
        line.update({k: result.get(k) for k in kept if k in result})
        append_jsonl(opts.releases_log, line)
    except (SwapError, OSError, sqlite3.Error) as exc:
        message = "%s of %s on %s failed in phase %s: %s" % (ACTION, opts.app_name, host, phase,
                                                             str(exc).rstrip("."))
        message += ". Nothing was changed on %s." % host if phase != "restore" else \
            ". The database may be partly restored; the state before is kept in %s." % result.get("safety_snapshot", "-")
        result.failed(phase, message, phase == "restore", run.phases, run.progress_seconds())
        if phase == "restore":
            try:
                append_jsonl(opts.releases_log, {"time": utc_now(), "app": opts.app_name, "actor": run.actor,
                                                 "result": "failed", "action": ACTION, "release": result.get("release"),
                                                 "failed_phase": phase, "error": message})
            except OSError:
                pass
        error = type(exc)(message, result.final("failed", live if live is not _READ else None, False, message)) \
            if isinstance(exc, SwapError) else SwapError(message, result.final("failed", None, False, message))
        raise error from exc
    finally:
        run.release_lock()
    return result.final("restored", live, False, "restored the database %s on %s from %s (as release %s left it "
                        "before release %s migrated); the state before is kept in %s"
                        % (opts.sqlite_path, host, snapshot, release, record.get("release"),
                           result.get("safety_snapshot", "-")))
