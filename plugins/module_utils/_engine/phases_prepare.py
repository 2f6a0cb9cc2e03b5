# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Phases before anything new runs: lock (and plan again under it), cleanup (converge after an
interrupted run: remove one-off and never-started containers, stop leftovers, adopt a release)."""

from __future__ import annotations

import http.client
import time
import typing as t

from .audit import utc_now
from .containers import remove_never_started, remove_quietly, stop
from .drain import drain
from .errors import ProxyError, ProxyReloadError, SwapError
from .http_probe import fetch_release
from .labels import LABEL_PORT, LABEL_RELEASE, LABEL_SERVICE, ONE_OFF_SERVICES, label, name
from .lock import DeployLock
from .plan import Plan, make_plan
from .proxy_nginx import switch_upstream

# Phases after which the interrupted run may have moved traffic (see cleanup).
TRAFFIC_PHASES = ("switch", "drain", "stop_old")


def lock(run: t.Any, plan: Plan) -> Plan:
    """Take the deploy lock (waiting up to lock_timeout) and plan again under it: another deploy
    may have finished while we waited. Returns the new plan."""
    opts = run.opts
    with run.timed("lock"):
        run.lock = DeployLock(opts.lock_file, dict(run.actor, app=opts.app_name, release=plan.release,
                                                   action=plan.action, since=utc_now(), phase="lock"))
        run.lock.acquire(opts.lock_timeout, background_wait=opts.stop_grace_seconds + 5)
        plan = run.plan = make_plan(run)
        run.result.from_plan(plan)
        run.lock.update(old_container=plan.live["Id"] if plan.live else None, previous_release=plan.previous_release)
    if run.lock.previous:
        keys = ("pid", "user", "release", "phase", "since")
        run.result.set(recovered_from={k: run.lock.previous.get(k) for k in keys})
    return plan


def cleanup(run: t.Any, plan: Plan) -> list[str]:
    """Converge after an interrupted run (kill -9) or a failed reload: remove one-off
    containers; stop web containers that run but are not the one the upstream file names.
    A running web container is stopped only after nginx was reloaded with a file naming
    another running one: when the file names nothing that runs, adopt one first; when none
    can be adopted, fail with nothing stopped (SwapError)."""
    opts = run.opts
    cleaned = []
    for container in run.containers():
        if label(container, LABEL_SERVICE) in ONE_OFF_SERVICES:
            remove_quietly(run, container["Id"])
            cleaned.append(name(container))
    cleaned.extend(remove_never_started(run))
    others = plan.others
    if not others:
        return cleaned
    interrupted = run.lock.previous if run.lock else None
    maybe_serving = interrupted is None or interrupted.get("phase") in TRAFFIC_PHASES
    # The killed run's new container, killed before the switch: nginx never routed to it.
    never_served = interrupted.get("new_container") if interrupted and not maybe_serving else None
    live = plan.live
    if live is None:
        live = _adopt(run, plan, never_served)
        if live is not None:
            others = [c for c in others if c["Id"] != live["Id"]]
            maybe_serving = True  # nginx may still route to any of the others
        elif [c for c in others if c["Id"] != never_served]:
            # None answers its health path, yet nginx may route to one (a probe times out exactly
            # under load): stopping any could be the outage. Stop nothing; a person decides.
            running = ", ".join("%s (release %s, port %s)" % (name(c), label(c, LABEL_RELEASE),
                                                              label(c, LABEL_PORT))
                                for c in others if c["Id"] != never_served)
            raise SwapError(
                "the upstream file %s names port %s, where no web container runs, and no running web container "
                "answered %s on its port: %s. nginx may still route to one of them, so no web container was "
                "stopped or removed. Check the app's health (docker logs <container>; curl "
                "http://127.0.0.1:<port>%s) and re-run (one that answers is adopted), or point the upstream file "
                "at the port of the release that serves (then nginx -t and reload nginx) and re-run; if none of "
                "them serves any more, stop them as root (docker stop <container>) and re-run"
                % (opts.upstream_file, plan.upstream_port, opts.health_path, running, opts.health_path))
    elif maybe_serving and plan.upstream_port is not None:
        # nginx may still route to a leftover (killed between rename and reload): make it read
        # the file that names the live container, and let in-flight requests finish.
        proxy_apply(run, plan.upstream_port, "reload nginx with the upstream file (port %s) before stopping "
                    "leftover web containers" % plan.upstream_port)
    if live is not None and maybe_serving:
        for container in others:
            drain(opts, label(container, LABEL_PORT))
    for container in others:
        if interrupted and container["Id"] == interrupted.get("old_container"):
            stop(run, container["Id"])  # the previous live release: keep it for rollback
        else:
            if maybe_serving:
                stop(run, container["Id"])
            remove_quietly(run, container["Id"])
        cleaned.append(name(container))
    return cleaned


def _answers_health(run: t.Any, port: int, attempts: int = 3) -> bool:
    url = "http://127.0.0.1:%d%s" % (port, run.opts.health_path)
    for attempt in range(attempts):
        try:
            if fetch_release(url, timeout=2.0)[0] in run.opts.health_statuses:
                return True
        except (OSError, http.client.HTTPException):
            pass
        if attempt + 1 < attempts:
            time.sleep(0.2)
    return False


def _adopt(run: t.Any, plan: Plan, never_served: t.Optional[str]) -> t.Optional[dict[str, t.Any]]:
    """The upstream file names no running web container, yet some run (a reload failed after
    the file was renamed in, or the file was edited by hand): nginx may be serving one of
    them. Point the file at the newest that answers its health path and reload."""
    candidates = sorted((c for c in plan.others if c["Id"] != never_served),
                        key=lambda c: c.get("Created", 0), reverse=True)
    for container in candidates:
        release = label(container, LABEL_RELEASE)
        try:
            port = int(label(container, LABEL_PORT) or "")
        except ValueError:
            continue
        if not _answers_health(run, port):
            continue
        proxy_apply(run, port, "adopt %s (release %s, port %d): the upstream file named port %s, where no web "
                    "container runs" % (name(container), release, port, plan.upstream_port),
                    restore=False)
        run.result.set(adopted={"container": name(container), "release": release, "port": port,
                                "upstream_port_before": plan.upstream_port})
        run.log("adopted %s: the upstream file named port %s, where no web container runs"
                % (name(container), plan.upstream_port))
        return container
    return None


def proxy_apply(run: t.Any, port: int, what: str, restore: bool = True) -> None:
    """switch_upstream for cleanup; a failure stops the run before anything is stopped."""
    opts = run.opts
    try:
        switch_upstream(opts.upstream_file, port, opts.proxy_test_command, opts.proxy_reload_command,
                        restore_on_reload_failure=restore)
    except ProxyError as exc:
        if isinstance(exc, ProxyReloadError) and exc.uncertain:
            run.result.uncertain(exc.file_port)
        raise SwapError("could not %s: %s" % (what, exc))
