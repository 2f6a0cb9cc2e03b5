"""The suite never passes by skipping: a missing prerequisite (no Docker engine, an image not
built) fails the tests that need it, loudly, and leaves every other test running.

Runs pytest in a child process on a small selection -- unit tests, an integration test, an image
test of the example app -- with DOCKER_HOST naming a socket that does not exist (both the docker
CLI and plugins/module_utils/_engine/docker_api.socket_path_from_env read it).
"""
from __future__ import annotations

import re
import subprocess
import sys

from gltest import REPO, ansible_env

UNIT = "tests/unit/plugins/module_utils/test_proxy_drain.py"
INTEGRATION = "tests/integration/test_swap_basic.py::test_bad_health_keeps_v1_serving"
IMAGE = "examples/django-app/tests/test_image.py::test_image_metadata"


def run_pytest(tmp_path, *selection: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "base"),
         *selection],
        cwd=REPO, env=ansible_env(GREENLIGHT_TEST_SERIAL="1", **env), capture_output=True, text=True, check=False,
        timeout=600,
    )


def counts(stdout: str) -> dict[str, int]:
    """{'passed': n, 'failed': n, 'error': n, 'skipped': n} from pytest's last summary line."""
    last = stdout.strip().splitlines()[-1]
    found = {word.rstrip("s"): int(number) for number, word in re.findall(r"(\d+) (\w+)", last)}
    return {key: found.get(key, 0) for key in ("passed", "failed", "error", "skipped")}


def test_no_docker_fails_the_tests_that_need_it_and_skips_nothing(tmp_path) -> None:
    missing = tmp_path / "no-such-docker.sock"
    proc = run_pytest(tmp_path, UNIT, INTEGRATION, IMAGE, DOCKER_HOST="unix://%s" % missing)
    result = counts(proc.stdout)
    assert proc.returncode != 0, proc.stdout[-4000:]
    assert result["skipped"] == 0, proc.stdout[-4000:]
    # The unit tests ran (the Docker check of tests/integration is scoped to that directory).
    unit_total = len(re.findall(r"^def test_", (REPO / UNIT).read_text(), re.M))
    assert result["passed"] >= unit_total > 0, proc.stdout[-4000:]
    # The two tests that need Docker failed (or errored in their fixture), each saying why.
    assert result["failed"] + result["error"] == 2, proc.stdout[-4000:]
    for test in (INTEGRATION, IMAGE):
        assert re.search(r"^(FAILED|ERROR) %s\b" % re.escape(test), proc.stdout, re.M), proc.stdout[-4000:]
    assert "Docker engine" in proc.stdout and str(missing) in proc.stdout, proc.stdout[-4000:]


def test_a_missing_image_fails_instead_of_skipping(tmp_path) -> None:
    """An image that was never built: the test that needs it fails and names the image and the fix."""
    proc = run_pytest(tmp_path, INTEGRATION, IMAGE, GREENLIGHT_TEST_IMAGE="greenlight/no-such-image",
                      TODO_IMAGE="greenlight/no-such-image")
    result = counts(proc.stdout)
    assert proc.returncode != 0, proc.stdout[-4000:]
    assert result["skipped"] == 0 and result["failed"] + result["error"] == 2, proc.stdout[-4000:]
    assert "greenlight/no-such-image:v1" in proc.stdout and "testbed/build-app-images.sh" in proc.stdout, \
        proc.stdout[-4000:]
