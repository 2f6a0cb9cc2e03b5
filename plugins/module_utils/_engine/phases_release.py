# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Phases that get the new release ready while the old one serves: snapshot (the database),
pre_switch (one-off commands, e.g. migrations), static (files out of the image), start (the new
web container on the free port), health (until it answers its health path)."""

from __future__ import annotations

import datetime
import http.client
import os
import shlex
import time
import typing as t

from .commands import as_argv
from .containers import container_config, container_name, logs, remove_quietly
from .docker_api import DockerError
from .errors import SwapError
from .http_probe import fetch_release
from .labels import SERVICE_WEB
from .plan import Plan
from .redact import tail
from .sqlite import sqlite_snapshot
from .static import extract_static


def snapshot(run: t.Any, plan: Plan) -> None:
    """Copy the SQLite database into backups_dir (restored on failure before the switch)."""
    opts = run.opts
    if os.path.lexists(opts.sqlite_path):  # a dangling link is refused by the snapshot, not skipped
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        run.snapshot = os.path.join(opts.backups_dir, "%s-%s-before-%s.sqlite3" % (opts.app_name, stamp, plan.release))
        sqlite_snapshot(opts.sqlite_path, run.snapshot)
        run.result.set(snapshot=run.snapshot)


def pre_switch(run: t.Any, plan: Plan) -> None:
    """Run each pre-switch command in a one-off container of the new image; any failure stops the run."""
    run.pre_switch_started = True
    outputs = []
    commands = run.opts.pre_switch_commands
    for number, command in enumerate(commands, 1):
        run.step("command %d of %d: %s" % (number, len(commands), shlex.join(as_argv(command))))
        outputs.append(tail(run_one_off(run, plan.image_id, plan.release, command), 20))
    run.result.set(pre_switch_output=outputs)


def run_one_off(run: t.Any, image_id: str, release: str, command: t.Any) -> str:
    opts = run.opts
    config = container_config(run, image_id, release, "pre-switch", None, command=command, restart=False)
    container_id = run.docker.create_container(container_name(opts.app_name, "pre-switch", release), config)
    run.one_off.append(container_id)
    argv = shlex.join(as_argv(command))
    try:
        run.docker.start_container(container_id)
        try:
            status = run.docker.wait_container(container_id, timeout=opts.pre_switch_timeout)
        except DockerError as exc:
            raise SwapError("pre-switch command `%s` did not finish within %ss (%s); output:\n%s"
                            % (argv, opts.pre_switch_timeout, exc, logs(run, container_id)))
        output = logs(run, container_id)
        if status != 0:
            raise SwapError("pre-switch command `%s` exited %d; last output:\n%s" % (argv, status, output))
        return output
    finally:
        remove_quietly(run, container_id)
        run.one_off.remove(container_id)


def static(run: t.Any, plan: Plan) -> None:
    """Copy static_source out of the new image (a created, never started container) into static_root."""
    opts = run.opts
    config = container_config(run, plan.image_id, plan.release, "static", None, command=["true"], restart=False)
    container_id = run.docker.create_container(container_name(opts.app_name, "static", plan.release), config)
    run.one_off.append(container_id)
    try:
        response, conn = run.docker.get_archive(container_id, opts.static_source)
        try:
            run.result.set(static_files=extract_static(response, opts.static_source, opts.static_root))
        finally:
            conn.close()
    finally:
        remove_quietly(run, container_id)
        run.one_off.remove(container_id)


def start(run: t.Any, plan: Plan) -> None:
    """Create and start the new web container on 127.0.0.1:<new_port> (the lock names it)."""
    name = container_name(run.opts.app_name, SERVICE_WEB, plan.release)
    config = container_config(run, plan.image_id, plan.release, SERVICE_WEB, plan.web_hash, port=plan.new_port)
    run.new_container = run.docker.create_container(name, config)
    run.lock.update(new_container=run.new_container)
    run.result.set(container_id=run.new_container, container_name=name)
    run.docker.start_container(run.new_container)


def health(run: t.Any, plan: Plan) -> dict[str, t.Any]:
    """Wait until the new container answers its health path; returns {status, release}."""
    answer = wait_healthy(run, run.new_container, plan.new_port)
    run.result.set(health_release=answer["release"])
    return answer


def wait_healthy(run: t.Any, container_id: str, port: int) -> dict[str, t.Any]:
    opts = run.opts
    url = "http://127.0.0.1:%d%s" % (port, opts.health_path)
    deadline = time.monotonic() + opts.health_timeout
    last = "no answer yet"
    while True:
        attempts = run.result.health_attempt()
        run.step("attempt %d" % attempts, repeat=True)  # no URL: a step is redacted like free text
        try:
            status, release = fetch_release(url, timeout=max(0.5, min(5.0, opts.health_timeout)))
            if status in opts.health_statuses:
                return {"status": status, "release": release}
            last = "HTTP %d" % status
        except (OSError, http.client.HTTPException) as exc:
            last = "%s: %s" % (type(exc).__name__, exc)
        state = run.docker.inspect_container(container_id).get("State") or {}
        if not state.get("Running"):
            raise SwapError("the new container exited (code %s) before it became healthy; last log lines:\n%s"
                            % (state.get("ExitCode"), logs(run, container_id)))
        if (state.get("Health") or {}).get("Status") == "unhealthy":
            raise SwapError("Docker reports the new container unhealthy; last log lines:\n%s" % logs(run, container_id))
        if time.monotonic() >= deadline:
            raise SwapError("health check %s failed for %ss (%d attempts, last: %s); last log lines of the new "
                            "container:\n%s" % (url, opts.health_timeout, attempts, last, logs(run, container_id)))
        time.sleep(opts.health_interval)
