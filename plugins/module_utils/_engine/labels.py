# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""What the engine writes on containers and reads back: label keys, service names, the config hash.

Label keys are a contract (docs/CONTRACTS.md); env values are never put into labels."""

from __future__ import annotations

import hashlib
import json
import typing as t

from .commands import as_argv


LABEL_APP = "greenlight.app"
LABEL_RELEASE = "greenlight.release"
LABEL_SERVICE = "greenlight.service"
LABEL_CONFIG_HASH = "greenlight.config-hash"
LABEL_PORT = "greenlight.port"
LABEL_IMAGE = "greenlight.image"

SERVICE_WEB = "web"
ONE_OFF_SERVICES = ("pre-switch", "static")
RESERVED_SERVICES = (SERVICE_WEB,) + ONE_OFF_SERVICES


def config_hash(image_id: str, service: str, command: t.Any, container_port: t.Optional[int], mounts: list,
                env_sha256: t.Optional[str], restart_policy: str, labels: dict) -> str:
    """Stable hash of everything that shapes a container except its host port and release id."""
    payload = {
        "image_id": image_id,
        "service": service,
        "command": as_argv(command) if command else None,
        "container_port": container_port,
        "mounts": list(mounts),
        "env_sha256": env_sha256,
        "restart_policy": restart_policy,
        "labels": dict(sorted(labels.items())),
    }
    encoded = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(encoded).hexdigest()[:16]


def label(container: dict[str, t.Any], key: str) -> t.Optional[str]:
    return (container.get("Labels") or {}).get(key)


def name(container: dict[str, t.Any]) -> str:
    names = container.get("Names") or [container.get("Name") or container.get("Id", "")[:12]]
    return names[0].lstrip("/")


def running(container: dict[str, t.Any]) -> bool:
    return container.get("State") == "running"
