"""State registry_login leaves on the server: a root-only Docker config with the registry's entry
(pulls run as root, through deploy.yml or deploy.sh), the CA where the engine looks for it, and a
deploy user that can neither read the credentials nor use Docker."""
from __future__ import annotations

import base64
import json
import os
import pathlib

REGISTRY = "registry.greenlight.test:5000"
IMAGE = f"{REGISTRY}/greenlight/debian:bookworm-slim"
PROJECT = pathlib.Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
CONFIG_DIR = "/root/.docker"


def password() -> str:
    return (PROJECT / ".testbed" / "registry-password").read_text().strip()


def test_docker_config_is_private_to_root(host) -> None:
    config_dir = host.file(CONFIG_DIR)
    assert config_dir.is_directory
    assert config_dir.user == "root"
    assert config_dir.mode == 0o700
    config = host.file(f"{CONFIG_DIR}/config.json")
    assert config.is_file
    assert config.user == "root"
    assert config.group == "root"
    assert config.mode == 0o600
    assert not host.file("/home/deploy/.docker/config.json").exists


def test_deploy_user_can_neither_read_the_credentials_nor_use_docker(host) -> None:
    assert host.run(f"sudo -u deploy cat {CONFIG_DIR}/config.json").rc != 0
    denied = host.run("sudo -u deploy docker ps")
    assert denied.rc != 0 and "permission denied" in denied.stderr.lower()
    assert "docker" not in host.user("deploy").groups


def test_docker_config_holds_the_registry_credentials(host) -> None:
    config = json.loads(host.file(f"{CONFIG_DIR}/config.json").content_string)
    wanted = base64.b64encode(f"greenlight:{password()}".encode()).decode()
    assert config["auths"][REGISTRY]["auth"] == wanted


def test_registry_ca_is_installed_for_the_engine(host) -> None:
    ca = host.file(f"/etc/docker/certs.d/{REGISTRY}/ca.crt")
    assert ca.is_file
    assert ca.user == "root"
    assert ca.mode == 0o644
    assert ca.content_string.strip() == (PROJECT / ".testbed" / "ca" / "ca.crt").read_text().strip()


def test_root_pulls_from_the_registry(host) -> None:
    host.run(f"docker image rm -f {IMAGE}")
    assert not host.run(f"docker image inspect {IMAGE}").succeeded
    pull = host.run(f"env DOCKER_CONFIG={CONFIG_DIR} docker pull {IMAGE}")
    assert pull.succeeded, pull.stderr
    assert "Downloaded newer image" in pull.stdout
    assert host.run(f"docker image inspect {IMAGE}").succeeded


def test_without_the_credentials_the_registry_refuses(host) -> None:
    """Control: without the stored credentials the pull above would have failed."""
    host.run(f"docker image rm -f {IMAGE}")
    pull = host.run(f"env DOCKER_CONFIG=/nonexistent docker pull {IMAGE}")
    assert not pull.succeeded
    assert "no basic auth credentials" in pull.stderr or "unauthorized" in pull.stderr
