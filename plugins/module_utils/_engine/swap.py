# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The swap: put one image live on one server with zero downtime (:func:`run_swap`).

The Ansible module ``container_swap`` and ``deploy.sh`` (cli.py) are both thin front ends over
:func:`run_swap`. Phases, one call per server per deploy (see docs/container_swap.md):

  plan -> lock -> cleanup                               phases_prepare.py (plan.py)
  -> snapshot -> pre_switch -> static -> start -> health  phases_release.py
  -> switch -> drain -> stop_old                        phases_traffic.py (drain.py)
  -> services -> prune -> record                        phases_finish.py
  (front ends: stop_old in a detached child after prune, which holds the lock until it is done)
  any failure                                           failure.py

Modes: deploy, rollback, recreate (the live release again, with the current env file: the same
phases without snapshot and pre_switch) run this sequence; prepare (prepare.py) and restore
(restore.py) are their own short runs.
"""

from __future__ import annotations

import typing as t

from . import phases_finish, phases_prepare, phases_release, phases_traffic
from .audit import append_jsonl, audit_record
from .containers import remove_quietly
from .context import Run
from .docker_api import DockerError
from .errors import OptionsError, SwapError
from .failure import fail
from .http_probe import proxy_answer
from .labels import name
from .options import SwapOptions, options_from_dict
from .paths import check_mount_sources
from .plan import Plan, describe, make_plan, predict
from .prepare import run_prepare
from .restore import run_restore
from .redact import redact, redact_free_text
from .result import Result, success_message, success_state
from .state import UNKNOWN, live_release

# The order of a swap (Python API, stop_old synchronous); the front ends stop the old release in
# the background after prune (before record): ..., drain, services, prune, stop_old, record.
PHASES = ("plan", "lock", "cleanup", "snapshot", "pre_switch", "static", "start", "health", "switch", "drain",
          "stop_old", "services", "prune", "record")


class Swap:
    """One swap on one server. Use :func:`run_swap`."""

    def __init__(self, opts: SwapOptions, docker: t.Optional[t.Any] = None,
                 log: t.Optional[t.Callable[[str], None]] = None, background_stop: bool = False,
                 progress: t.Optional[t.Callable[[dict[str, t.Any]], None]] = None) -> None:
        self.ctx = Run(opts, docker=docker, log=log, progress=progress)
        self.background_stop = background_stop

    def run(self) -> dict[str, t.Any]:
        ctx, opts, result = self.ctx, self.ctx.opts, self.ctx.result
        plan = self._plan()
        result.set(diff={"before": describe(ctx, plan, False), "after": describe(ctx, plan, True)})
        if not plan.changed:
            result.set(actions=[], phases=ctx.phases)
            self._proxy_check()
            return self._final()
        result.set(changed=True, actions=predict(opts, plan))
        if opts.check_mode:
            result.set(phases=ctx.phases)
            return self._final()
        try:
            self._locked(plan)
        except BaseException as exc:
            fail(ctx, exc)
            cause = exc if isinstance(exc, Exception) else None
            raise SwapError(result["msg"], self._final(failure=result["msg"])) from cause
        self._proxy_check()
        result.set(**redact_free_text(result.data, ctx.env))  # e.g. an X-Release the app chose
        return self._final()

    def _locked(self, plan: Plan) -> None:
        """The phases that change the server, under the deploy lock."""
        ctx, opts, result = self.ctx, self.ctx.opts, self.ctx.result
        plan = phases_prepare.lock(ctx, plan)
        if not plan.changed:  # another deploy did it while we waited
            result.set(changed=False, actions=[], phases=ctx.phases,
                       diff={"before": describe(ctx, plan, False), "after": describe(ctx, plan, False)})
            ctx.release_lock()
            return
        check_mount_sources(opts.mounts)  # before the snapshot reads under a mount, before any container
        with ctx.timed("cleanup"):
            cleaned = phases_prepare.cleanup(ctx, plan)
        if cleaned or result.get("adopted"):
            if cleaned:
                result.set(cleaned=cleaned)
            plan = self._replan()  # the leftovers are gone: decide again
        result.set(action=plan.action)
        if plan.web_change:
            # recreate: the live image again, whose migrations already ran: no snapshot, no pre-switch.
            fresh = opts.mode != "recreate"
            for phase, wanted in (("snapshot", fresh and opts.sqlite_path),
                                  ("pre_switch", fresh and opts.pre_switch_commands),
                                  ("static", opts.static_source), ("start", True)):
                if wanted:
                    with ctx.timed(phase):
                        getattr(phases_release, phase)(ctx, plan)
            with ctx.timed("health"):
                health = phases_release.health(ctx, plan)
            with ctx.timed("switch"):
                phases_traffic.switch(ctx, plan, health)
            if plan.live:
                with ctx.timed("drain"):
                    phases_traffic.drain(ctx, plan)
                if not self.background_stop:
                    with ctx.timed("stop_old"):
                        phases_traffic.stop_old(ctx, plan)
        else:
            result.serving(plan.live, plan.live_port)
        stopping = plan.live if plan.web_change and self.background_stop else None
        try:
            with ctx.timed("services"):
                result.set(services=phases_finish.services(ctx, plan))
            with ctx.timed("prune"):
                result.set(pruned=phases_finish.prune(ctx, result.get("container_id"), plan.release,
                                                      stopping_id=stopping["Id"] if stopping else None))
        except BaseException:
            if stopping:  # as without the background stop: the old release is kept, stopped
                try:
                    phases_traffic.stop_old(ctx, plan)
                except DockerError as exc:  # the next run's cleanup stops it
                    ctx.log("could not stop %s: %s" % (name(stopping), exc))
            raise
        if stopping:
            self._stop_old_in_background(plan, stopping)
        phases_finish.record(ctx, plan)
        ctx.recorded()  # the background stop may let the lock go now
        ctx.release_lock()

    def _stop_old_in_background(self, plan: Plan, old: dict[str, t.Any]) -> None:
        """The old release no longer gets traffic (drained): a detached child stops it, holding
        the lock until then (phases_traffic.py), while this run records and returns. When no
        child can be started, stop it here."""
        ctx = self.ctx

        def remove_after_stop() -> None:
            remove_quietly(ctx, old["Id"])
            phases_finish.prune_images(ctx, [old.get("ImageID")])

        # Not a timed phase here: the lock file must name phase stop_old only with the child's pid.
        stopping = phases_traffic.stop_old_in_background(ctx, plan,
                                                         then=remove_after_stop if ctx.remove_after_stop else None)
        if stopping is None:
            with ctx.timed("stop_old"):
                phases_traffic.stop_old(ctx, plan)
                if ctx.remove_after_stop:
                    remove_after_stop()
                    ctx.result.set(pruned=ctx.result.get("pruned", []) + [name(old)])
            return
        ctx.result.set(stopping_old=dict(stopping, removed_after=ctx.remove_after_stop))

    # -- around the phases ------------------------------------------------------------------------
    def _plan(self) -> Plan:
        """The plan phase; a failure here changed nothing (recorded unless in check mode)."""
        ctx, opts, result = self.ctx, self.ctx.opts, self.ctx.result
        try:
            with ctx.timed("plan"):
                return self._replan()
        except (SwapError, DockerError) as exc:
            result.failed("plan", redact(str(exc), ctx.env), False, ctx.phases, ctx.progress_seconds())
            result.set(action=opts.mode if opts.mode in ("rollback", "recreate") else "deploy",
                       release=opts.release or opts.rollback_release, image=opts.image)
            message = "%s of %s failed in phase plan on %s (nothing was changed): %s" % (
                result["action"], opts.app_name, ctx.actor["host"], result["error"])
            if not opts.check_mode:
                try:
                    append_jsonl(opts.releases_log, audit_record(result.data, opts.app_name, ctx.actor, ctx.env))
                except OSError as log_error:
                    message += " (could not write %s: %s)" % (opts.releases_log, log_error)
            raise SwapError(message, self._final(failure=message))

    def _replan(self) -> Plan:
        plan = self.ctx.plan = make_plan(self.ctx)
        self.ctx.result.from_plan(plan)
        return plan

    def _proxy_check(self) -> None:
        """When nothing verified the proxy in this run (no web swap), ask it once whether it
        answers, so callers need no smoke check of their own: result proxy_verified. A failed
        check changes nothing and fails nothing here; proxy_verified is then absent."""
        if "proxy_verified" not in self.ctx.result:
            verified = proxy_answer(self.ctx.opts)
            if verified:
                self.ctx.result.set(proxy_verified=verified)

    def _final(self, failure: t.Optional[str] = None) -> dict[str, t.Any]:
        """The result with switched, live_release (read from the server now) and outcome."""
        ctx, opts, result = self.ctx, self.ctx.opts, self.ctx.result
        live = (UNKNOWN if result.get("proxy_uncertain")
                else live_release(ctx.docker, opts.app_name, opts.upstream_file))
        if failure is not None:
            return result.final("failed", live, ctx.switched, failure)
        return result.final(success_state(result.data, opts.check_mode, opts.mode), live, ctx.switched,
                            success_message(result.data, ctx.actor["host"], opts.check_mode, live, opts.mode))


def run_swap(options: t.Union[dict, SwapOptions], docker: t.Optional[t.Any] = None,
             log: t.Optional[t.Callable[[str], None]] = None, background_stop: bool = False,
             progress: t.Optional[t.Callable[[dict[str, t.Any]], None]] = None) -> dict[str, t.Any]:
    """Run one swap. Returns the result dict; raises SwapError (with `.result`) on failure.

    background_stop (the front ends, container_swap and deploy.sh, set it): once traffic has left
    the old release, a detached child stops it holding the deploy lock, and this returns (result
    stopping_old); without it (tests, embedding) the old release is stopped before returning.

    progress (deploy.sh sets it): called at every phase start and end and at each step of a long
    phase (context.Run.step); the same facts are in the result (phase_log, progress)."""
    try:
        try:
            opts = options_from_dict(options)
        except TypeError as exc:
            raise OptionsError("invalid options: %s" % exc)
    except OptionsError as exc:  # nothing was read or changed: the outcome says so
        exc.result = Result({}).final("failed", UNKNOWN, False, str(exc))
        exc.result["outcome"]["phase"] = exc.result["failed_phase"] = "options"
        raise
    if opts.mode == "prepare":
        return run_prepare(Run(opts, docker=docker, log=log, progress=progress))
    if opts.mode == "restore":
        return run_restore(Run(opts, docker=docker, log=log, progress=progress))
    return Swap(opts, docker=docker, log=log, background_stop=background_stop, progress=progress).run()
