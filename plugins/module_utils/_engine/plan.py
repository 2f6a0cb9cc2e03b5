# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The plan: read the server's state (state.py) and decide what the swap has to do. Touches nothing."""

from __future__ import annotations

import dataclasses
import shlex
import typing as t

from .commands import as_argv
from .docker_api import NotFound
from .errors import SwapError
from .labels import (LABEL_CONFIG_HASH, LABEL_IMAGE, LABEL_PORT, LABEL_RELEASE, LABEL_SERVICE, RESERVED_SERVICES,
                     SERVICE_WEB, label, name, running)
from .options import derive_release
from .state import read_state


@dataclasses.dataclass
class ServicePlan:
    """One extra service: its spec (None: no longer wanted, remove), wanted hash, containers, change."""

    name: str
    spec: t.Any = None
    hash: t.Optional[str] = None
    existing: list = dataclasses.field(default_factory=list)
    change: bool = True


@dataclasses.dataclass
class Plan:
    """What one run will do, decided from the server's state (Docker + the upstream file)."""

    action: str = "deploy"  # deploy | config-change | rollback
    release: t.Optional[str] = None
    image: t.Optional[str] = None
    image_id: t.Optional[str] = None
    image_digest: t.Optional[str] = None
    web_hash: t.Optional[str] = None
    web_change: bool = False  # a new web container must be started and switched to
    services_plan: list = dataclasses.field(default_factory=list)  # [ServicePlan]
    services_change: bool = False
    changed: bool = False
    live: t.Optional[dict] = None  # the running web container nginx serves
    pointed: t.Optional[dict] = None  # the web container the upstream file names (running or not)
    others: list = dataclasses.field(default_factory=list)  # running web containers nginx should not serve
    upstream_port: t.Optional[int] = None
    live_port: t.Optional[int] = None
    new_port: t.Optional[int] = None
    previous_release: t.Optional[str] = None
    previous_digest: t.Optional[str] = None


def resolve_image(docker: t.Any, reference: str) -> dict[str, t.Any]:
    try:
        image = docker.inspect_image(reference)
    except NotFound:
        raise SwapError("image %s is not on this server; pull it first (e.g. community.docker.docker_image_pull "
                        "or docker pull)" % reference)
    digests = image.get("RepoDigests") or []
    return {"id": image["Id"], "digest": digests[0] if digests else None, "repo_digests": digests}


def _digest_of(docker: t.Any, image_id: t.Optional[str]) -> t.Optional[str]:
    if not image_id:
        return None
    try:
        return resolve_image(docker, image_id)["digest"]
    except SwapError:
        return None  # the old image may have been removed; the digest is only informative


def _rollback_target(opts: t.Any, webs: list, pointed: t.Optional[dict]) -> dict[str, t.Any]:
    # A container still "created" never ran (killed between create and start): no target.
    candidates = sorted((c for c in webs if c.get("State") != "created"), key=lambda c: c.get("Created", 0),
                        reverse=True)
    if opts.rollback_release:
        targets = [c for c in candidates if label(c, LABEL_RELEASE) == opts.rollback_release]
        if not targets:
            kept = sorted({label(c, LABEL_RELEASE) for c in candidates} - {None})
            raise SwapError("no kept release %s of %s to roll back to; kept releases: %s"
                            % (opts.rollback_release, opts.app_name, ", ".join(kept) or "none"))
    else:
        live_release = label(pointed, LABEL_RELEASE) if pointed else None
        targets = [c for c in candidates if not running(c) and label(c, LABEL_RELEASE) != live_release]
        if not targets:
            raise SwapError("no previous release of %s is kept on this server to roll back to" % opts.app_name)
    return targets[0]


def make_plan(run: t.Any) -> Plan:
    """Read the server's state and decide what the swap has to do (reads the env file first)."""
    opts = run.opts
    run.read_env()
    state = read_state(run.docker, opts.app_name, opts.upstream_file)
    pointed, live, others = state.pointed, state.live, state.others
    if opts.mode == "rollback":
        target = _rollback_target(opts, state.webs, pointed)
        release = label(target, LABEL_RELEASE)
        image_ref = label(target, LABEL_IMAGE) or target.get("ImageID")
        image = resolve_image(run.docker, target["ImageID"])
    elif opts.mode == "recreate":  # the live release again, with the current env file and options
        if live is None:
            raise SwapError("no release of %s is live on this server (the upstream file %s names port %s), so "
                            "there is nothing to re-create; deploy one first"
                            % (opts.app_name, opts.upstream_file, state.upstream_port))
        release = label(live, LABEL_RELEASE)
        image = resolve_image(run.docker, live["ImageID"])
        image_ref = label(live, LABEL_IMAGE) or live["ImageID"]
        try:  # the reference it was deployed from, if it still names this image (else the image id)
            if resolve_image(run.docker, image_ref)["id"] != image["id"]:
                image_ref = live["ImageID"]
        except SwapError:
            image_ref = live["ImageID"]
    else:
        image = resolve_image(run.docker, opts.image)
        image_ref = opts.image
        release = opts.release or derive_release(opts.image, image["id"])

    web_hash = run.hash(image["id"], SERVICE_WEB)
    web_same = bool(live and label(live, LABEL_RELEASE) == release and live.get("ImageID") == image["id"]
                    and label(live, LABEL_CONFIG_HASH) == web_hash)
    services_plan = plan_services(run, state.containers, image["id"], release)
    services_change = any(item.change for item in services_plan)
    if opts.mode == "rollback":
        action = "rollback"
    elif live and live.get("ImageID") == image["id"] and (web_same or label(live, LABEL_RELEASE) == release):
        action = "config-change"
    else:
        action = "deploy"
    live_port = state.upstream_port if live else None
    pair = list(opts.host_ports)
    return Plan(
        action=action, release=release, image=image_ref, image_id=image["id"], image_digest=image["digest"],
        web_hash=web_hash, web_change=not web_same, services_plan=services_plan, services_change=services_change,
        changed=(not web_same) or services_change or bool(others), live=live, pointed=pointed, others=others,
        upstream_port=state.upstream_port, live_port=live_port, new_port=pair[1] if live_port == pair[0] else pair[0],
        previous_release=label(pointed, LABEL_RELEASE) if pointed else None,
        previous_digest=_digest_of(run.docker, pointed.get("ImageID")) if pointed else None)


def plan_services(run: t.Any, containers: list, image_id: str, release: str) -> list[ServicePlan]:
    plan = []
    wanted = set()
    for spec in run.opts.services:
        wanted.add(spec.name)
        mine = [c for c in containers if label(c, LABEL_SERVICE) == spec.name]
        desired = run.hash(image_id, spec.name, spec.command)
        current = [c for c in mine if running(c) and label(c, LABEL_CONFIG_HASH) == desired
                   and label(c, LABEL_RELEASE) == release and c.get("ImageID") == image_id]
        plan.append(ServicePlan(name=spec.name, spec=spec, hash=desired, existing=mine,
                                change=not (len(current) == 1 and len(mine) == 1)))
    for container in containers:
        service = label(container, LABEL_SERVICE)
        if service not in RESERVED_SERVICES and service not in wanted:
            wanted.add(service)
            mine = [c for c in containers if label(c, LABEL_SERVICE) == service]
            plan.append(ServicePlan(name=service, existing=mine, change=True))
    return plan


def predict(opts: t.Any, plan: Plan) -> list[str]:
    """The steps the run would take, in words (check mode's `actions`)."""
    steps = []
    if plan.others and not plan.live:
        steps.append("the upstream file names port %s, where no web container runs: point it at the newest "
                     "running one that answers %s (adopt it) instead of stopping it, or fail stopping nothing "
                     "if none answers; candidates: %s"
                     % (plan.upstream_port, opts.health_path, ", ".join(name(c) for c in plan.others)))
    elif plan.others:
        steps.append("stop leftover web container(s) of an interrupted run: %s"
                     % ", ".join(name(c) for c in plan.others))
    if plan.web_change:
        if opts.sqlite_path:
            steps.append("snapshot %s into %s" % (opts.sqlite_path, opts.backups_dir))
        for command in opts.pre_switch_commands:
            steps.append("run pre-switch command: %s" % shlex.join(as_argv(command)))
        if opts.static_source:
            steps.append("copy %s from the image into %s" % (opts.static_source, opts.static_root))
        steps.append("start %s-web-%s on 127.0.0.1:%d and wait for %s"
                     % (opts.app_name, plan.release, plan.new_port, opts.health_path))
        steps.append("point %s at 127.0.0.1:%d and reload the proxy" % (opts.upstream_file, plan.new_port))
        if plan.live:
            steps.append("drain (%s %ss), then stop %s (kept for rollback)" % (
                "until the proxy holds no connection to it, at most" if opts.drain_until_idle else "wait",
                opts.drain_seconds, name(plan.live)))
    for item in plan.services_plan:
        if item.change:
            steps.append("replace service %s" % item.name if item.spec else "remove service %s" % item.name)
    return steps


def describe(run: t.Any, plan: Plan, after: bool) -> dict[str, t.Any]:
    """The live release before the run, or after it (the result's diff)."""
    if not after or not plan.web_change:
        live = plan.pointed
        if not live:
            return {"release": None, "image": None, "image_id": None, "digest": None,
                    "port": plan.upstream_port, "container": None}
        return {"release": label(live, LABEL_RELEASE), "image": label(live, LABEL_IMAGE),
                "image_id": live.get("ImageID"), "digest": plan.previous_digest,
                "port": int(label(live, LABEL_PORT) or 0) or None, "container": name(live)}
    return {"release": plan.release, "image": plan.image, "image_id": plan.image_id,
            "digest": plan.image_digest, "port": plan.new_port,
            "container": run.result.get("container_name") or "%s-web-%s-(new)" % (run.opts.app_name, plan.release)}
