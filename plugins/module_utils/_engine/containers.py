# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Containers the engine creates, stops and removes for a run, and their log tails (redacted)."""

from __future__ import annotations

import secrets
import typing as t

from .commands import as_argv
from .docker_api import DockerError
from .labels import LABEL_APP, LABEL_CONFIG_HASH, LABEL_IMAGE, LABEL_PORT, LABEL_RELEASE, LABEL_SERVICE, name
from .paths import check_mount_sources
from .redact import redact, tail


def container_config(run: t.Any, image_id: str, release: str, service: str, config_hash_value: t.Optional[str],
                     command: t.Any = None, port: t.Optional[int] = None, restart: bool = True) -> dict[str, t.Any]:
    opts = run.opts
    check_mount_sources(opts.mounts)  # every container, right before Docker resolves the paths
    labels = dict(opts.labels)
    labels.update({LABEL_APP: opts.app_name, LABEL_RELEASE: release, LABEL_SERVICE: service,
                   LABEL_IMAGE: run.result.get("image") or image_id})
    if config_hash_value:
        labels[LABEL_CONFIG_HASH] = config_hash_value
    host_config: dict[str, t.Any] = {
        "Binds": list(opts.mounts),
        "RestartPolicy": {"Name": opts.restart_policy if restart else "no"},
    }
    config: dict[str, t.Any] = {"Image": image_id, "Env": list(run.env), "Labels": labels,
                                "HostConfig": host_config}
    if command:
        config["Cmd"] = as_argv(command)
    if port is not None:
        key = "%d/tcp" % opts.container_port
        labels[LABEL_PORT] = str(port)
        config["ExposedPorts"] = {key: {}}
        host_config["PortBindings"] = {key: [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    return config


def container_name(app_name: str, service: str, release: str) -> str:
    return "%s-%s-%s-%s" % (app_name, service, release, secrets.token_hex(3))


def remove_quietly(run: t.Any, container_id: t.Optional[str]) -> None:
    if not container_id:
        return
    try:
        run.docker.remove_container(container_id, force=True)
    except DockerError as exc:
        run.log("could not remove %s: %s" % (container_id[:12], exc))


def stop(run: t.Any, container_id: str) -> None:
    run.docker.stop_container(container_id, run.opts.stop_grace_seconds)


def logs(run: t.Any, container_id: str, lines: int = 50) -> str:
    """The last lines a container printed, with every env value redacted (an app may print its
    secrets, and these lines reach messages, results, releases.jsonl and CI logs)."""
    return tail(redact(run.docker.container_logs(container_id, tail=lines), run.env), lines)


def remove_never_started(run: t.Any) -> list[str]:
    """Containers of this app still "created" were never started (a run killed between create
    and start): they proved nothing, so they are removed, never kept for rollback."""
    removed = []
    for container in run.containers():
        if container.get("State") == "created":
            remove_quietly(run, container["Id"])
            removed.append(name(container))
    return removed
