"""Old releases' images are removed with their containers; the kept releases' images stay."""

from __future__ import annotations

import subprocess
import typing as t

import pytest

from conftest import docker_client, image, require_images

from ansible_collections.greenlight.deploy.plugins.module_utils._engine.swap import run_swap

pytestmark = pytest.mark.docker

DEPLOYS = 8
KEEP = 3


def _image_id(reference: str) -> t.Optional[str]:
    proc = subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", reference], capture_output=True,
                          text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


@pytest.fixture
def variants(app_name: str, tmp_path) -> t.Iterator[list[str]]:
    """DEPLOYS single-tagged images built locally from v1 (one label each; nothing is pulled)."""
    require_images("v1")
    repository = "%s/todo" % app_name
    (tmp_path / "build").mkdir()
    references = []
    try:
        for number in range(DEPLOYS):
            (tmp_path / "build" / "Dockerfile").write_text("FROM %s\nLABEL gltest.variant=%s-%d\n"
                                                           % (image("v1"), app_name, number))
            reference = "%s:%d" % (repository, number)
            subprocess.run(["docker", "build", "--pull=false", "-q", "-t", reference, str(tmp_path / "build")],
                           check=True, capture_output=True)
            references.append(reference)
        yield references
    finally:
        client = docker_client()
        for container in client.list_containers(labels={"greenlight.app": app_name}):
            client.remove_container(container["Id"], force=True)
        for reference in references:
            subprocess.run(["docker", "image", "rm", "-f", reference], capture_output=True, check=False)


def test_images_of_pruned_releases_are_removed_and_rollback_works_offline(app_host, nginx, variants):
    ids = [_image_id(reference) for reference in variants]
    assert len(set(ids)) == DEPLOYS and None not in ids
    fast = {"releases_to_keep": KEEP, "pre_switch_commands": [], "static_source": None, "drain_seconds": 0.3,
            "stop_grace_seconds": 2, "proxy_verify_url": None}
    pruned: list[str] = []
    for number, reference in enumerate(variants):
        options = app_host.options(image=reference, **fast)
        if number == 0:  # migrate once; the schema stays the same
            options["pre_switch_commands"] = app_host.options()["pre_switch_commands"]
        result = run_swap(options)
        assert result["release"] == str(number)
        pruned.extend(result.get("pruned_images") or [])
    assert nginx.get("/health")[0] == 200
    # Live: release 7; kept: 6, 5, 4. Releases 0-3 and their images are gone, nothing else.
    webs = [c for c in app_host.containers() if c["Labels"]["greenlight.service"] == "web"]
    assert sorted(c["Labels"]["greenlight.release"] for c in webs) == ["4", "5", "6", "7"]
    remaining = [number for number, reference in enumerate(variants) if _image_id(reference)]
    assert remaining == [4, 5, 6, 7]
    assert sorted(pruned) == sorted(ids[:4])
    assert _image_id(image("v1")) is not None  # the base image (other tags, other users) stays

    # Roll back to the oldest kept release: its image is on the server by id, nothing is pulled.
    rollback = app_host.options(mode="rollback", rollback_release="4", **fast)
    result = run_swap(rollback)
    assert result["release"] == "4" and result["image_id"] == ids[4]
    assert nginx.get("/health")[0] == 200
    live = [c for c in app_host.running_web()]
    assert [c["ImageID"] for c in live] == [ids[4]]
    # The rollback pruned release 4's superseded container but kept its image (the new one uses it)
    # and every other kept release's image.
    assert [number for number, reference in enumerate(variants) if _image_id(reference)] == [4, 5, 6, 7]
