"""Shared paths and helpers for the greenlight.deploy test suite (imported by tests)."""
from __future__ import annotations

import os
import pathlib
import shutil
import socket
import subprocess

REPO = pathlib.Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
TESTBED_STATE = pathlib.Path(os.environ.get("GREENLIGHT_TESTBED_STATE", REPO / ".testbed"))


def ansible_env(**extra: str) -> dict[str, str]:
    """Environment for ansible/molecule child processes: the collection from this checkout."""
    env = dict(os.environ)
    env["ANSIBLE_COLLECTIONS_PATH"] = str(REPO / ".collections")
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("ANSIBLE_FORCE_COLOR", "false")
    env.update(extra)
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def docker_answers() -> bool:
    """Whether a Docker engine answers (`docker info`)."""
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "info"], capture_output=True, check=False
    ).returncode == 0
