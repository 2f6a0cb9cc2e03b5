"""Fixtures of the reliability and security suite (docs/reliability.md).

One server container for the whole suite (see server_under_test.py): set up once with
setup.yml, v1 deployed; each test leaves it serving some release with the lock free. Its setup
starts in the background as soon as collection is done (tests/prewarm.py), so it is ready, or
nearly, when the first test of this directory runs.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import tempfile
import typing as t

import pytest

import prewarm
from gltest import docker_answers
from server_under_test import Server

IMAGES = ("greenlight/server-docker:bookworm", "greenlight/todo:v1")
HERE = pathlib.Path(__file__).resolve().parent

LAST = "test_env_file_and_docker_config_stay_0600_after_every_playbook"


def pytest_collection_modifyitems(config, items):
    """The 0600 test checks what every earlier playbook run of the suite left: it runs last."""
    last = [item for item in items if item.name == LAST]
    for item in last:
        items.remove(item)
        items.append(item)


def image_missing() -> t.Optional[str]:
    for image in IMAGES:
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode != 0:
            return image
    return None


def set_up_server(workdir: pathlib.Path, job: t.Optional[prewarm.Job] = None) -> Server:
    """A server container, set up with setup.yml, v1 deployed and served (removed on failure)."""
    server = Server(workdir)
    if job is not None:
        job.abort = server.remove
        if job.cancelled:
            raise RuntimeError("cancelled")
    server.write_inventory()
    try:
        server.start()
        setup = server.playbook("setup.yml")
        assert setup.rc == 0, setup.output[-4000:]
        first = server.deploy("v1")
        assert first.rc == 0, first.output[-4000:]
        server.wait_release("v1")
    except BaseException:
        server.remove()
        raise
    return server


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the suite's server setup in the background when a test of this directory needs it."""
    if session.config.option.collectonly or not prewarm.enabled():
        return
    needing = [index for index, item in enumerate(session.items)
               if "server" in getattr(item, "fixturenames", ()) and HERE in item.path.parents]
    if not needing:
        return
    if not docker_answers() or image_missing() or shutil.which("flock") is None:
        return  # the fixture fails, saying why
    factory = getattr(session.config, "_tmp_path_factory", None)  # what tmp_path_factory hands out
    workdir = factory.mktemp("reliability") if factory else pathlib.Path(tempfile.mkdtemp(prefix="glrel-"))
    prewarm.register("reliability-server", lambda job: set_up_server(workdir, job), cleanup=Server.remove,
                     first_needed=needing[0])


@pytest.fixture(scope="session")
def server(tmp_path_factory, docker_available) -> t.Iterator[Server]:
    missing = image_missing()
    if missing:
        pytest.fail("image %s missing: run `make testbed`" % missing)
    if shutil.which("flock") is None:
        pytest.fail("flock (util-linux) is needed on this machine")
    started = prewarm.take("reliability-server")
    server = started.result() if started else set_up_server(tmp_path_factory.mktemp("reliability"))
    try:
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
