# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Mode prepare: everything a deploy needs before it may change anything, so a batch of servers
can be prepared together and swapped only when every one of them is ready.

preflight: fail fast when another deploy holds the lock (naming its holder), but wait, up to
stop_grace_seconds + 5 s, for a previous run's background stop of its old release; pull: the
image with the registry login (check mode: look for it locally, else ask the registry); then
resolve its id and digest and plan the swap, to say whether it would change anything (noop). On a
noop, one GET of proxy_verify_url tells whether nginx still answers (proxy_verified, as the swap
reports it), so a caller that skips the swap needs no smoke request of its own."""

from __future__ import annotations

import time
import typing as t

from .context import Run
from .docker_api import DockerError, NotFound
from .errors import SwapError, UnsafePathError
from .http_probe import proxy_answer
from .lock import finishing, lock_holder
from .paths import root_only_problem
from .plan import make_plan
from .registry import RegistryError, manifest_exists, pull
from .state import live_release


def _holder_text(run: Run, holder: dict[str, t.Any]) -> str:
    opts = run.opts
    if holder.get("pid") in (None, "unknown"):
        who = "a process that wrote no details into it (not a greenlight deploy?)."
    else:
        who = "%s of release %s by pid %s (user %s), phase %s, since %s." % (
            holder.get("action", "deploy"), holder.get("release"), holder.get("pid"), holder.get("user"),
            holder.get("phase"), holder.get("since"))
    return ("Another deploy of %s holds %s on %s: %s Wait for it to finish and re-run (the lock frees itself when "
            "that process ends)" % (opts.app_name, opts.lock_file, run.actor["host"], who))


def preflight(run: Run) -> None:
    """Fail fast (SwapError) when another deploy holds the lock; wait for a background stop."""
    opts = run.opts
    try:
        holder = lock_holder(opts.lock_file)
        deadline = time.monotonic() + opts.stop_grace_seconds + 5
        while finishing(holder) and time.monotonic() < deadline:
            time.sleep(0.1)
            holder = lock_holder(opts.lock_file)
    except UnsafePathError as exc:
        raise SwapError("Cannot check the deploy lock %s on %s: %s" % (opts.lock_file, run.actor["host"], exc))
    if holder:
        raise SwapError(_holder_text(run, holder))


def _local_image(run: Run) -> t.Optional[dict[str, t.Any]]:
    try:
        return run.docker.inspect_image(run.opts.image)
    except NotFound:
        return None


def run_prepare(run: Run) -> dict[str, t.Any]:
    """Mode prepare; returns the result, raises SwapError (result attached) naming the phase."""
    opts, result = run.opts, run.result
    host = run.actor["host"]
    result.set(action="prepare", image=opts.image, noop=False)
    phase = "preflight"
    try:
        with run.timed("preflight"):
            preflight(run)
        phase = "pull"
        with run.timed("pull"):
            # Root runs the Docker client with this directory (credential helpers, CLI plugins):
            # only when nobody but root can change it, as deploy.sh demands of deploy.json's.
            problem = root_only_problem(opts.docker_config) if opts.docker_config else None
            if problem:
                raise SwapError("refusing docker_config %s: %s, but the pull runs as root and must only use files "
                                "that root alone can change; set greenlight_registry_user to root (the default) "
                                "or fix the owner and mode" % (opts.docker_config, problem))
            before = _local_image(run)
            if opts.check_mode and before is None:
                manifest_exists(opts.image, opts.docker_config)
            elif not opts.check_mode:
                pull(opts.image, opts.docker_config)
            after = _local_image(run)
        live = live_release(run.docker, opts.app_name, opts.upstream_file)
        if after is None:  # check mode, in the registry only: nothing more can be told
            result.set(changed=True, phases=run.phases)
            return result.final("would-pull", live, False, "would pull %s on %s" % (opts.image, host))
        phase = "plan"
        with run.timed("plan"):
            plan = make_plan(run)
    except (SwapError, RegistryError, DockerError, OSError) as exc:
        what = {"preflight": "preflight", "pull": "docker manifest inspect" if opts.check_mode else "docker pull",
                "plan": "plan"}[phase]
        message = "%s %s failed on %s: %s." % (what, opts.image, host, str(exc).rstrip("."))
        if phase == "preflight":
            message = "%s." % str(exc).rstrip(".")
        message += " Nothing was changed on %s." % host
        result.failed(phase, message, False, run.phases, run.progress_seconds())
        live = live_release(run.docker, opts.app_name, opts.upstream_file)
        raise SwapError(message, result.final("failed", live, False, message))
    result.from_plan(plan)
    result.set(action="prepare", changed=(before or {}).get("Id") != after["Id"], noop=not plan.changed,
               image_id=after["Id"], image_digest=plan.image_digest, phases=run.phases)
    verified = proxy_answer(run.opts) if not plan.changed else None
    if verified:
        result.set(proxy_verified=verified)
    message = "%s is ready on %s (release %s; %s)" % (
        opts.image, host, plan.release, "already live, nothing to swap" if not plan.changed else "%s is live" % live)
    return result.final("prepared", live, False, message)
