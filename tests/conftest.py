"""Shared pytest fixtures for the greenlight.deploy test suite."""
from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from gltest import REPO  # noqa: E402


@pytest.fixture(scope="session")
def repo() -> pathlib.Path:
    return REPO


@pytest.fixture(scope="session")
def docker_available() -> None:
    if shutil.which("docker") is None or subprocess.run(
        ["docker", "info"], capture_output=True, check=False
    ).returncode != 0:
        pytest.fail("no Docker engine answers: run `make testbed` (make test does it first)")
