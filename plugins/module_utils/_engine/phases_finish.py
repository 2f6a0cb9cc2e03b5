# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Phases after the web swap: services (replace the extra services of the new release), prune
(old releases beyond releases_to_keep, their images, old snapshots), record (releases.jsonl)."""

from __future__ import annotations

import os
import time
import typing as t

from .audit import append_jsonl, audit_record
from .containers import container_config, container_name, logs, remove_never_started, remove_quietly, stop
from .docker_api import DockerError, NotFound
from .errors import SwapError
from .labels import LABEL_RELEASE, LABEL_SERVICE, SERVICE_WEB, label, name, running
from .paths import refuse_linked_dir
from .plan import Plan, describe


def services(run: t.Any, plan: Plan) -> list[str]:
    """Start each changed service of the new release, then stop the old one (a singleton: the other
    way round, never two at once); remove services no longer wanted. Returns the running names."""
    names = []
    for item in plan.services_plan:
        spec = item.spec
        if spec is None:
            for container in item.existing:
                stop(run, container["Id"])
                remove_quietly(run, container["Id"])
            continue
        if not item.change:
            names.append(name(item.existing[0]))
            continue
        old = item.existing
        if spec.singleton:
            for container in old:  # never two of a singleton (e.g. a scheduler) at once
                stop(run, container["Id"])
        new_name = container_name(run.opts.app_name, spec.name, plan.release)
        config = container_config(run, plan.image_id, plan.release, spec.name, item.hash, command=spec.command)
        container_id = run.docker.create_container(new_name, config)
        try:
            run.docker.start_container(container_id)
            time.sleep(0.5)
            state = run.docker.inspect_container(container_id).get("State") or {}
            if not state.get("Running"):
                raise SwapError("service %s exited right after start (code %s); last log lines:\n%s"
                                % (spec.name, state.get("ExitCode"), logs(run, container_id)))
        except BaseException:
            remove_quietly(run, container_id)
            if spec.singleton:
                for container in old:
                    try:
                        run.docker.start_container(container["Id"])
                    except DockerError:
                        pass
            raise
        for container in old:
            if not spec.singleton:
                stop(run, container["Id"])
            remove_quietly(run, container["Id"])
        names.append(new_name)
    return names


def prune(run: t.Any, live_id: t.Optional[str], live_release: t.Optional[str],
          stopping_id: t.Optional[str] = None) -> list[str]:
    """Remove stopped web containers beyond releases_to_keep (never the live release), the images
    only they used, and snapshots beyond backups_to_keep. Returns what was removed.

    `stopping_id`: the old release, still running while a background child stops it: it counts
    as the newest kept release and is never touched here; when releases_to_keep leaves no room
    for it, run.remove_after_stop says so and the child removes it once stopped."""
    removed = remove_never_started(run)
    webs = [c for c in run.containers() if label(c, LABEL_SERVICE) == SERVICE_WEB
            and c["Id"] != live_id and (not running(c) or c["Id"] == stopping_id)]
    webs.sort(key=lambda c: c.get("Created", 0), reverse=True)
    kept_releases: list[str] = []
    removed_images = []
    for container in webs:
        release = label(container, LABEL_RELEASE)
        if release != live_release and release not in kept_releases and \
                len(kept_releases) < run.opts.releases_to_keep:
            kept_releases.append(release)
            continue
        if container["Id"] == stopping_id:
            run.remove_after_stop = True
            continue
        remove_quietly(run, container["Id"])
        removed.append(name(container))
        removed_images.append(container.get("ImageID"))
    run.result.set(pruned_images=prune_images(run, removed_images))
    if run.opts.sqlite_path:
        removed.extend(prune_backups(run.opts))
    return removed


def prune_images(run: t.Any, candidates: list) -> list[str]:
    """Remove the images of the containers just pruned that no container of this app uses any
    more (kept releases, the live one, services) and that the deployed release does not use;
    those are never asked for. DELETE /images/<id> without force: Docker itself refuses (409)
    an image any other container uses (of any app, running or stopped) or one tagged in
    several repositories, which is then left alone; an image with several tags of one
    repository is untagged and removed."""
    in_use = {c.get("ImageID") for c in run.containers()}
    deployed = run.plan.image_id if run.plan else None
    pruned = []
    for image_id in dict.fromkeys(candidates):  # unique, in order
        if not image_id or image_id in in_use or image_id == deployed:
            continue
        try:
            run.docker.remove_image(image_id)
        except NotFound:
            continue
        except DockerError as exc:  # 409: in use; anything else must not fail a deploy that is live
            run.log("image %s kept: %s" % (image_id[:19], exc))
            continue
        pruned.append(image_id)
    return pruned


def prune_backups(opts: t.Any) -> list[str]:
    """Old snapshots beyond backups_to_keep, and the temp files of runs killed mid-snapshot."""
    backups_dir = opts.backups_dir
    refuse_linked_dir(backups_dir)
    if not os.path.isdir(backups_dir):
        return []
    removed = []
    prefix = "%s-" % opts.app_name
    names = [f for f in os.listdir(backups_dir) if f.startswith(prefix)]
    for partial in sorted(f for f in names if f.endswith((".sqlite3.partial", ".sqlite3.partial-journal"))):
        os.unlink(os.path.join(backups_dir, partial))  # we hold the lock: no snapshot is being taken
        removed.append(partial)
    backups = sorted(f for f in names if f.endswith(".sqlite3"))
    for stale in backups[:max(0, len(backups) - opts.backups_to_keep)]:
        os.unlink(os.path.join(backups_dir, stale))
        removed.append(stale)
    return removed


def record(run: t.Any, plan: Plan) -> None:
    """The diff (before/after) and the audit line in releases.jsonl."""
    with run.timed("record"):
        run.result.set(diff={"before": describe(run, plan, False), "after": describe(run, plan, True)},
                       phases=run.phases)
    run.result.set(phases=run.phases)
    append_jsonl(run.opts.releases_log, audit_record(run.result.data, run.opts.app_name, run.actor, run.env))
