"""The env file app_env wrote: mode, owner, every KEY line, and how Docker reads it."""
from __future__ import annotations

import os
import pathlib
import subprocess

ENV_FILE = "/opt/todo/todo.env"


def canary(name: str) -> str:
    return (pathlib.Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / name).read_text().strip()


def test_env_file_is_private_to_the_deploy_user(host) -> None:
    env_file = host.file(ENV_FILE)
    assert env_file.is_file
    assert env_file.user == "deploy"
    assert env_file.group == "deploy"
    assert env_file.mode == 0o600


def test_env_file_holds_plain_and_secret_variables(host) -> None:
    lines = host.file(ENV_FILE).content_string.splitlines()
    variables = [line for line in lines if line and not line.startswith("#")]
    assert variables == sorted(variables), "variables are written in a stable (sorted) order"
    assert "DJANGO_ALLOWED_HOST=todo.greenlight.test" in variables
    assert "DJANGO_DEBUG_FALSE=1" in variables
    assert "DJANGO_DB_PATH=/data/db.sqlite3" in variables
    assert f"DJANGO_SECRET_KEY={canary('canary-secret-key')}" in variables
    assert f"EMAIL_HOST_PASSWORD={canary('canary-email')}" in variables
    assert len(variables) == 5


def test_docker_reads_the_file_as_written(host, tmp_path) -> None:
    """docker run --env-file on the test machine hands the values to a container verbatim."""
    copy = tmp_path / "todo.env"
    copy.write_text(host.file(ENV_FILE).content_string)
    copy.chmod(0o600)
    proc = subprocess.run(
        ["docker", "run", "--rm", "--env-file", str(copy), "debian:bookworm-slim", "env"],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    env = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    assert env["DJANGO_SECRET_KEY"] == canary("canary-secret-key")
    assert env["DJANGO_DEBUG_FALSE"] == "1"
    assert env["DJANGO_ALLOWED_HOST"] == "todo.greenlight.test"
