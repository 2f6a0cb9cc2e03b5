# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""A run that failed: leave the server as it was before the switch (remove what the run created,
restore the database), or keep both releases running when nginx may route to either; write the
audit line; build the message that says what serves and what to do."""

from __future__ import annotations

import sqlite3
import typing as t

from .audit import append_jsonl, audit_record
from .containers import remove_quietly
from .errors import LockTimeout, SwapError
from .labels import LABEL_PORT, LABEL_RELEASE, label, name
from .proxy_nginx import read_upstream_port
from .redact import redact, redact_free_text
from .sqlite import sqlite_restore


def fail(run: t.Any, exc: BaseException) -> None:
    """Undo what is safe to undo, record the failure, put the message into result["msg"]."""
    opts = run.opts
    phase = run.phase
    plan = run.plan
    result = run.result
    previous = result.get("previous_release")
    notes = []
    if isinstance(exc, LockTimeout):
        message = str(exc)
    else:
        message = "%s: %s" % (type(exc).__name__, exc) if not isinstance(exc, SwapError) else str(exc)
    # App-controlled text reaches here (an X-Release header, a health answer, log lines, any
    # exception's text): redact once, for the message, the result and the audit line alike.
    message = redact(message, run.env)
    if result.get("proxy_uncertain") and not isinstance(exc, LockTimeout):
        for container_id in list(run.one_off):
            remove_quietly(run, container_id)
        notes.append(uncertain_note(run, plan))
    elif not run.switched and not isinstance(exc, LockTimeout):
        for container_id in list(run.one_off):
            remove_quietly(run, container_id)
        if run.new_container:
            remove_quietly(run, run.new_container)
            notes.append("removed the new container")
            result.serving(plan.live if plan else None, plan.live_port if plan else None)
        if run.snapshot and run.pre_switch_started and opts.restore_on_failure and not run.ever_switched:
            try:
                sqlite_restore(run.snapshot, opts.sqlite_path)
                notes.append("restored the database from %s" % run.snapshot)
                result.set(restored=True)
            except (OSError, sqlite3.Error) as restore_error:
                notes.append("COULD NOT restore the database from %s: %s" % (run.snapshot, restore_error))
                result.set(restored=False)
        if result.get("rolled_back"):
            notes.append("the previous release %s is serving again" % previous)
        elif previous and plan and plan.live:
            notes.append("the previous release %s is still serving" % previous)
        elif plan and not plan.live and phase != "cleanup":
            notes.append("no release was live")
    elif run.switched:
        notes.append("release %s is live on port %s" % (result.get("release"), result.get("live_port")))
    result.failed(phase, message, phase not in ("plan", "lock"), run.phases, run.progress_seconds())
    what = result.get("action") or "deploy"
    result.set(msg="%s of %s release %s failed in phase %s on %s: %s%s. %s" % (
        what, opts.app_name, result.get("release"), phase, run.actor["host"], message.rstrip("."),
        "" if not notes else "; " + "; ".join(notes),
        "Fix the cause and re-run; every run is recorded in %s." % opts.releases_log))
    result.set(**redact_free_text(result.data, run.env))  # msg is built from the redacted message
    try:
        append_jsonl(opts.releases_log, audit_record(result.data, opts.app_name, run.actor, run.env))
    except OSError as log_error:
        result.set(msg=result["msg"] + " (could not write %s: %s)" % (opts.releases_log, log_error))
    run.release_lock()


def uncertain_note(run: t.Any, plan: t.Optional[t.Any]) -> str:
    """nginx could not be reloaded: say what runs, what the upstream file names, what to do."""
    running = []
    if plan:
        for container in ([plan.live] if plan.live else []) + list(plan.others):
            running.append("%s (release %s, port %s)" % (name(container), label(container, LABEL_RELEASE),
                                                         label(container, LABEL_PORT)))
        if run.new_container:
            running.append("%s (release %s, port %s)" % (run.result.get("container_name"),
                                                         run.result.get("release"), plan.new_port))
    file_port = read_upstream_port(run.opts.upstream_file)
    note = ("nginx could not be reloaded, so it may be routing to either release: nothing was stopped or "
            "removed, %s kept running; the upstream file names port %s, which nginx reads at its next reload "
            "or start" % (", ".join(running) or "no web container", file_port))
    if run.snapshot and run.pre_switch_started:
        note += "; the database was not restored (the new release may have served)"
    return note + ("; repair nginx (nginx -t; systemctl status nginx) and re-run: the next run reloads nginx "
                   "with that file before it stops anything")
