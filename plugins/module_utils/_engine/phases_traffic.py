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
                              opts.proxy_verify_timeout)
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


def stop_old_in_background(run: t.Any, plan: Plan,
                           then: t.Optional[t.Callable[[], None]] = None) -> t.Optional[dict[str, t.Any]]:
    """Stop the old release's web container in a detached child (detach.py) that takes over the
    deploy lock: the lock file names the child's pid and phase stop_old until the container is
    stopped, then the child releases it. The caller returns meanwhile: traffic has left the old
    release (drain). Returns {container, release, pid}; None when no child could be started
    (then nothing was handed over: the caller stops it itself). `then` runs in the child after
    the stop, still under the lock (prune's removal of the old release when none is kept)."""
    old = plan.live
    lock = run.lock
    if lock is None or lock.fd is None:
        return None
    stopping = {"container": name(old), "release": label(old, LABEL_RELEASE)}

    def ready() -> None:
        run.log = lambda message: None  # stderr is /dev/null now
        lock.update(phase="stop_old", pid=os.getpid(), stopping=stopping["container"])

    def work() -> int:
        try:
            stop(run, old["Id"])
            if then is not None:
                then()
        except DockerError as exc:  # the next run's cleanup stops it (the lock journal names it)
            try:
                append_jsonl(run.opts.releases_log, audit_record(
                    {"action": "stop_old", "release": stopping["release"], "failed_phase": "stop_old",
                     "error": "could not stop %s in the background: %s" % (stopping["container"], exc)},
                    run.opts.app_name, dict(run.actor, pid=os.getpid()), run.env))
            except OSError:
                pass
            return 1
        finally:
            lock.release()
        return 0

    try:
        pid = spawn_detached(ready, work, keep=[lock.fd])
    except OSError as exc:
        run.log("could not stop %s in the background (%s): stopping it now" % (stopping["container"], exc))
        return None
    lock.hand_over()
    run.lock = None
    return dict(stopping, pid=pid)
