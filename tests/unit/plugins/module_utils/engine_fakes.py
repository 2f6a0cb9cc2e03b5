"""A fake Docker client and a run context for testing the engine's phase files one at a time."""

from __future__ import annotations

import typing as t
from pathlib import Path

from ansible_collections.greenlight.deploy.plugins.module_utils._engine import docker_api
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.context import Run
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.labels import config_hash
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.options import options_from_dict

IMAGE_V1 = "sha256:" + "11" * 32
IMAGE_V2 = "sha256:" + "22" * 32


class FakeDocker:
    """An in-memory Docker: containers are dicts like GET /containers/json gives; every change is
    recorded in `calls` as (verb, id)."""

    def __init__(self, containers: t.Optional[list] = None, exit_codes: t.Optional[dict] = None,
                 logs: str = "") -> None:
        self.containers = list(containers or [])
        self.calls: list[tuple[str, str]] = []
        self.exit_codes = exit_codes or {}  # by service label: what wait_container returns
        self.logs = logs
        self.images = {ref: {"Id": image, "RepoDigests": ["registry.test/todo@sha256:" + image[-64:]]}
                       for ref, image in (("todo:v1", IMAGE_V1), ("todo:v2", IMAGE_V2), (IMAGE_V1, IMAGE_V1),
                                          (IMAGE_V2, IMAGE_V2))}
        self.created = 0

    def _find(self, container_id: str) -> dict:
        return next(c for c in self.containers if c["Id"] == container_id)

    def inspect_image(self, reference):
        if reference not in self.images:
            raise docker_api.NotFound("no such image")
        return self.images[reference]

    def list_containers(self, labels=None, all=True):
        return [dict(c) for c in self.containers]

    def create_container(self, name, config):
        self.created += 1
        container_id = "id-new-%d" % self.created
        self.containers.append({"Id": container_id, "Names": ["/" + name], "State": "created",
                                "ImageID": config["Image"], "Created": 10 ** 9 + self.created,
                                "Labels": dict(config["Labels"]), "Config": config})
        self.calls.append(("create", container_id))
        return container_id

    def start_container(self, container_id):
        self.calls.append(("start", container_id))
        self._find(container_id)["State"] = "running"

    def stop_container(self, container_id, grace):
        self.calls.append(("stop", container_id))
        self._find(container_id)["State"] = "exited"

    def remove_container(self, container_id, force=True):
        self.calls.append(("remove", container_id))
        self.containers.remove(self._find(container_id))

    def remove_image(self, image):
        self.calls.append(("remove_image", image))

    def inspect_container(self, container_id):
        return {"State": {"Running": self._find(container_id)["State"] == "running", "ExitCode": 3}}

    def wait_container(self, container_id, timeout):
        return self.exit_codes.get(self._find(container_id)["Labels"]["greenlight.service"], 0)

    def container_logs(self, container_id, tail=50):
        return self.logs


def options(tmp_path: Path, **extra: t.Any) -> dict[str, t.Any]:
    values = {"app_name": "todo", "image": "todo:v2", "app_dir": str(tmp_path / "app"),
              "upstream_file": str(tmp_path / "todo-upstream.conf"), "host_ports": [18001, 18002],
              "proxy_test_command": ["true"], "proxy_reload_command": ["true"], "stop_grace_seconds": 1}
    values.update(extra)
    return values


def web(values: dict, release: str, image_id: str, port: int, state: str = "running", created: int = 1,
        service: str = "web") -> dict[str, t.Any]:
    opts = options_from_dict(values)
    labels = {"greenlight.app": "todo", "greenlight.release": release, "greenlight.service": service,
              "greenlight.image": "todo:%s" % release}
    if service == "web":
        labels["greenlight.port"] = str(port)
        labels["greenlight.config-hash"] = config_hash(image_id, "web", None, opts.container_port, opts.mounts,
                                                       None, opts.restart_policy, opts.labels)
    return {"Id": "id-%s-%s" % (service, release), "Names": ["/todo-%s-%s-abc123" % (service, release)],
            "State": state, "ImageID": image_id, "Created": created, "Labels": labels}


def make_run(tmp_path: Path, docker: FakeDocker, **extra: t.Any) -> Run:
    (tmp_path / "app").mkdir(exist_ok=True)
    return Run(options_from_dict(options(tmp_path, **extra)), docker=docker)
