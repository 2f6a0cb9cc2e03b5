# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The one reader of a server's state: what is live, what is kept, who holds the lock, what was
recorded. The plan, the CLI's status, the result's live_release and mode prepare all ask here, so
they cannot disagree.

The live release is the running web container (label greenlight.service=web) whose
greenlight.port is the port the nginx upstream file names; Docker and that file are the truth,
never releases.jsonl (an audit log the deploy user can write)."""

from __future__ import annotations

import dataclasses
import datetime
import typing as t

from .audit import read_records
from .docker_api import DockerClient, DockerError
from .labels import LABEL_APP, LABEL_IMAGE, LABEL_PORT, LABEL_RELEASE, LABEL_SERVICE, SERVICE_WEB, label, name, running
from .lock import finishing, lock_holder
from .proxy_nginx import maintenance_file, maintenance_on, read_upstream_port

UNKNOWN = "unknown"


@dataclasses.dataclass
class ServerState:
    """The app's containers as Docker lists them and the port the upstream file names."""

    containers: list
    upstream_port: t.Optional[int]

    @property
    def webs(self) -> list[dict[str, t.Any]]:
        return [c for c in self.containers if label(c, LABEL_SERVICE) == SERVICE_WEB]

    @property
    def pointed(self) -> t.Optional[dict[str, t.Any]]:
        """The web container the upstream file names (the newest, a running one first), running or not."""
        at_port = sorted((c for c in self.webs if label(c, LABEL_PORT) == str(self.upstream_port)),
                         key=lambda c: (running(c), c.get("Created", 0)), reverse=True)
        return at_port[0] if at_port else None

    @property
    def live(self) -> t.Optional[dict[str, t.Any]]:
        """The web container nginx serves: the one the upstream file names, when it runs."""
        pointed = self.pointed
        return pointed if pointed and running(pointed) else None

    @property
    def live_release(self) -> t.Optional[str]:
        return label(self.live, LABEL_RELEASE) if self.live else None

    @property
    def others(self) -> list[dict[str, t.Any]]:
        """Running web containers nginx should not serve (leftovers of an interrupted run)."""
        live = self.live
        return [c for c in self.webs if running(c) and (live is None or c["Id"] != live["Id"])]

    @property
    def kept(self) -> list[dict[str, t.Any]]:
        """Every web container but the live one (kept for rollback, or leftovers)."""
        live = self.live
        return [c for c in self.webs if live is None or c["Id"] != live["Id"]]

    @property
    def since(self) -> t.Optional[str]:
        """When the live container was created (UTC)."""
        if not self.live:
            return None
        return datetime.datetime.fromtimestamp(self.live.get("Created") or 0, datetime.timezone.utc) \
            .strftime("%Y-%m-%dT%H:%M:%SZ")


def read_state(docker: t.Any, app_name: str, upstream_file: str) -> ServerState:
    """One look at the server: the app's containers and the upstream file (DockerError propagates)."""
    return ServerState(containers=docker.list_containers(labels={LABEL_APP: app_name}),
                       upstream_port=read_upstream_port(upstream_file))


def live_release(docker: t.Any, app_name: str, upstream_file: str) -> t.Optional[str]:
    """The release nginx serves now, None when none, "unknown" when Docker cannot tell."""
    try:
        return read_state(docker, app_name, upstream_file).live_release
    except (DockerError, OSError):
        return UNKNOWN


def image_digest(docker: t.Any, image_id: t.Optional[str], repository: t.Optional[str] = None) -> t.Optional[str]:
    """The registry digest of a local image (one of `repository` first), None when it has none."""
    if not image_id:
        return None
    try:
        digests = docker.inspect_image(image_id).get("RepoDigests") or []
    except DockerError:
        return None  # the image may have been removed; the digest is only informative
    ours = [d for d in digests if repository and d.split("@", 1)[0] == repository]
    return (ours or digests or [None])[0]


def describe(container: dict[str, t.Any]) -> dict[str, t.Any]:
    return {"release": label(container, LABEL_RELEASE), "image": label(container, LABEL_IMAGE),
            "container": name(container) if container.get("Names") else "?", "state": container.get("State"),
            "port": label(container, LABEL_PORT)}


# Audit records of day-2 operations (deploy.sh run, maintenance): not deploys, they never make a
# server "failed".
OPERATION_ACTIONS = ("run", "maintenance")
CONDITIONS = ("locked", "failed", "live", "none")


def condition(live: t.Optional[dict[str, t.Any]], holder: t.Optional[dict[str, t.Any]],
              last_deploy: t.Optional[dict[str, t.Any]]) -> str:
    """One word for a fleet table: locked (a deploy holds the lock now; not a finished run's
    background stop of its old release, lock.finishing), failed (the last deploy, rollback or
    restore recorded failed; what serves is in `live`), live, or none (nothing live)."""
    if holder and not finishing(holder):
        return "locked"
    if last_deploy and last_deploy.get("result") == "failed":
        return "failed"
    return "live" if live else "none"


def status(opts: t.Any, host: str, repository: t.Optional[str] = None, last: int = 5,
           docker: t.Optional[t.Any] = None) -> dict[str, t.Any]:
    """Everything `deploy.sh status` and container_swap_info show: live release (image id, digest,
    since), kept releases, lock holder and phase, the last `last` audit records, the last deploy's
    record and the condition. Raises DockerError, UnsafePathError."""
    docker = docker or DockerClient(opts.docker_socket)
    state = read_state(docker, opts.app_name, opts.upstream_file)
    live = None
    if state.live:
        live = describe(state.live)
        live.update({"image_id": state.live.get("ImageID"), "since": state.since,
                     "image_digest": image_digest(docker, state.live.get("ImageID"), repository)})
    holder = lock_holder(opts.lock_file)
    records = read_records(opts.releases_log)
    deploys = [r for r in records if r.get("action") not in OPERATION_ACTIONS]
    last_deploy = deploys[-1] if deploys else None
    return {
        "app": opts.app_name,
        "host": host,
        "condition": condition(live, holder, last_deploy),
        "upstream_port": state.upstream_port,
        "maintenance": maintenance_on(maintenance_file(opts.upstream_file, opts.app_name)),
        "live": live,
        "kept": [describe(c) for c in state.kept],
        "lock": holder,
        "releases_log": opts.releases_log,
        "last_deploy": last_deploy,
        "last_records": records[-last:] if last > 0 else [],
    }
