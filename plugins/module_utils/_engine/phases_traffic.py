# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Phases that move traffic: switch (point the nginx upstream at the new port, reload, verify
through the proxy, switch back when that fails), drain (drain.py) and stop_old (in the
background: a detached child holds the deploy lock until the old release is stopped)."""

from __future__ import annotations

import os
import select
import typing as t

from .audit import append_jsonl, audit_record
from .containers import stop
from .detach import spawn_detached
from .docker_api import DockerError
from .drain import drain as wait_for_drain
from .errors import ProxyError, ProxyReloadError, SwapError
from .http_probe import verify
from .labels import LABEL_PORT, LABEL_RELEASE, label, name
from .plan import Plan
from .proxy_nginx import switch_upstream


def switch(run: t.Any, plan: Plan, health: dict[str, t.Any]) -> None:
    """Point the upstream file at the new port and reload nginx gracefully; with proxy_verify_url,
    check through nginx that the new release answers, else switch back (SwapError)."""
    opts = run.opts
    run.step("reloading the proxy with the new upstream")
    try:
        switch_upstream(opts.upstream_file, plan.new_port, opts.proxy_test_command, opts.proxy_reload_command)
    except ProxyReloadError as exc:
        if exc.uncertain:  # nginx may have read the new file: failure.py keeps both releases running
            run.result.uncertain(exc.file_port)
        raise
    run.switched = True
    run.ever_switched = True
    run.result.set(live_port=plan.new_port)
    if opts.proxy_verify_url:
        try:
            verified = verify(opts.proxy_verify_url, health["release"], opts.health_statuses,
                              opts.proxy_verify_timeout, on_attempt=lambda number: run.step(
                                  "verify attempt %d through the proxy" % number, repeat=True))
            run.result.set(proxy_verified=dict(verified, url=opts.proxy_verify_url))
        except ProxyError as exc:
            switch_back(run, plan, exc)


def switch_back(run: t.Any, plan: Plan, error: Exception) -> None:
    """Verify failed after the switch: point nginx back at the previous release. Always raises."""
    old = plan.live
    if not old:
        raise SwapError("%s; no previous release was live to switch back to, the new release stays in the "
                        "upstream" % error)
    state = run.docker.inspect_container(old["Id"]).get("State") or {}
    if not state.get("Running"):
        raise SwapError("%s; the previous container %s is not running, so the new release stays in the upstream"
                        % (error, name(old)))
    opts = run.opts
    try:
        # The file keeps naming the previous (known-good) release even if nginx cannot be
        # reloaded now: nginx reads it at its next start, the next run re-applies it.
        switch_upstream(opts.upstream_file, plan.live_port, opts.proxy_test_command, opts.proxy_reload_command,
                        restore_on_reload_failure=False)
    except ProxyError as exc:
        if isinstance(exc, ProxyReloadError) and exc.uncertain:
            run.result.uncertain(exc.file_port)
        raise SwapError("%s; could not switch the proxy back to the previous release %s: %s"
                        % (error, plan.previous_release, exc))
    run.switched = False
    run.result.set(rolled_back=True, live_port=plan.live_port)
    raise SwapError("%s; switched the proxy back to the previous release" % error)


def drain(run: t.Any, plan: Plan) -> None:
    """Let nginx finish what it sent to the old release (drain.py)."""
    run.result.set(drain=wait_for_drain(run.opts, label(plan.live, LABEL_PORT) or plan.upstream_port))


def stop_old(run: t.Any, plan: Plan) -> None:
    """Stop the old release's web container (kept, stopped, for rollback)."""
    stop(run, plan.live["Id"])


# How long the background child waits for the deploy to write its audit record before it lets
# the lock go anyway (as an interrupted run, see below).
RECORDED_WAIT_SECONDS = 60.0


def _wait_recorded(fd: int, timeout: float = RECORDED_WAIT_SECONDS) -> bool:
    """True once the deploy wrote its audit record (it writes one byte); False when it closed the
    pipe without it (it died or failed to record) or did not within `timeout` seconds."""
    try:
        readable = select.select([fd], [], [], timeout)[0]
        return bool(readable) and os.read(fd, 1) == b"1"
    except OSError:
        return False
    finally:
        os.close(fd)


def stop_old_in_background(run: t.Any, plan: Plan,
                           then: t.Optional[t.Callable[[], None]] = None) -> t.Optional[dict[str, t.Any]]:
    """Stop the old release's web container in a detached child (detach.py) that takes over the
    deploy lock: the lock file names the child's pid and phase stop_old until the container is
    stopped AND the deploy wrote its audit record (run.recorded(), one byte through a pipe), so
    releases.jsonl keeps its order and no other run starts before that line is written. Then the
    child releases the lock. When the stop failed, or the deploy never said it recorded (killed
    meanwhile), the child unlocks without marking the run ended: the next run sees an interrupted
    run (recovered_from) and its cleanup keeps the old release, as after a kill -9.
    Returns {container, release, pid}; None when no child could be started (then nothing was
    handed over: the caller stops it itself). `then` runs in the child after the stop, still
    under the lock (prune's removal of the old release when none is kept)."""
    old = plan.live
    lock = run.lock
    if lock is None or lock.fd is None:
        return None
    stopping = {"container": name(old), "release": label(old, LABEL_RELEASE)}
    recorded_read, recorded_write = os.pipe()

    def ready() -> None:
        run.log = lambda message: None  # stderr is /dev/null now
        lock.update(phase="stop_old", pid=os.getpid(), stopping=stopping["container"])

    def work() -> int:
        failure = None
        try:
            stop(run, old["Id"])
            if then is not None:
                then()
        except DockerError as exc:  # the next run's cleanup stops it (the lock file names it)
            failure = exc
        except BaseException as exc:  # pylint: disable=broad-exception-caught
            failure = exc
        recorded = _wait_recorded(recorded_read)
        if failure is not None:
            try:
                append_jsonl(run.opts.releases_log, audit_record(
                    {"action": "stop_old", "release": stopping["release"], "failed_phase": "stop_old",
                     "error": "could not stop %s in the background: %s" % (stopping["container"], failure)},
                    run.opts.app_name, dict(run.actor, pid=os.getpid()), run.env))
            except OSError:
                pass
        if failure is None and recorded:
            lock.release()
        else:
            lock.abandon()
        return 0 if failure is None else 1

    try:
        pid = spawn_detached(ready, work, keep=[lock.fd, recorded_read])
    except OSError as exc:
        os.close(recorded_write)
        run.log("could not stop %s in the background (%s): stopping it now" % (stopping["container"], exc))
        return None
    except BaseException:
        # Interrupted while the child may already hold the lock: never unlock it from here (the
        # lock belongs to the open file both share); forget it, the child or the kernel frees it.
        os.close(recorded_write)
        lock.hand_over()
        run.lock = None
        raise
    finally:
        os.close(recorded_read)
    lock.hand_over()
    run.lock = None
    run.recorded_fd = recorded_write
    return dict(stopping, pid=pid)
