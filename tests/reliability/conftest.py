"""Fixtures of the reliability and security suite (docs/reliability.md).

One server container for the whole suite (see server_under_test.py): set up once with
setup.yml, v1 deployed; each test leaves it serving some release with the lock free.
"""

from __future__ import annotations

import shutil
import subprocess
import typing as t

import pytest

from server_under_test import Server

LAST = "test_env_file_and_docker_config_stay_0600_after_every_playbook"


def pytest_collection_modifyitems(config, items):
    """The 0600 test checks what every earlier playbook run of the suite left: it runs last."""
    last = [item for item in items if item.name == LAST]
    for item in last:
        items.remove(item)
        items.append(item)


@pytest.fixture(scope="session")
def server(tmp_path_factory, docker_available) -> t.Iterator[Server]:
    for image in ("greenlight/server-docker:bookworm", "greenlight/todo:v1"):
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode != 0:
            pytest.fail("image %s missing: run `make testbed`" % image)
    if shutil.which("flock") is None:
        pytest.fail("flock (util-linux) is needed on this machine")
    server = Server(tmp_path_factory.mktemp("reliability"))
    server.write_inventory()
    server.start()
    try:
        setup = server.playbook("setup.yml")
        assert setup.rc == 0, setup.output[-4000:]
        first = server.deploy("v1")
        assert first.rc == 0, first.output[-4000:]
        server.wait_release("v1")
        yield server
    finally:
        server.remove()


@pytest.fixture
def settled(server: Server) -> Server:
    """The server as every test expects it: a release live through nginx, the lock free."""
    release = server.live_release()
    assert release in ("v1", "v2"), "the previous test left nothing serving (%s)" % release
    assert server.lock_is_free(), "the previous test left the deploy lock held: %s" % server.lock_holder()
    return server
