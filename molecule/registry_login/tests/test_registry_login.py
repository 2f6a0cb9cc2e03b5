"""State registry_login leaves on the server: private Docker config with the registry's entry,
the CA where the engine looks for it, and pulls that work as the deploy user only."""
from __future__ import annotations

import base64
import json
import os
import pathlib

REGISTRY = "registry.greenlight.test:5000"
IMAGE = f"{REGISTRY}/greenlight/debian:bookworm-slim"
PROJECT = pathlib.Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])


def password() -> str:
    return (PROJECT / ".testbed" / "registry-password").read_text().strip()


def test_docker_config_is_private_to_the_deploy_user(host) -> None:
    config_dir = host.file("/home/deploy/.docker")
    assert config_dir.is_directory
    assert config_dir.user == "deploy"
    assert config_dir.mode == 0o700
    config = host.file("/home/deploy/.docker/config.json")
    assert config.is_file
    assert config.user == "deploy"
    assert config.group == "deploy"
    assert config.mode == 0o600


def test_docker_config_holds_the_registry_credentials(host) -> None:
    config = json.loads(host.file("/home/deploy/.docker/config.json").content_string)
    wanted = base64.b64encode(f"greenlight:{password()}".encode()).decode()
    assert config["auths"][REGISTRY]["auth"] == wanted


def test_registry_ca_is_installed_for_the_engine(host) -> None:
    ca = host.file(f"/etc/docker/certs.d/{REGISTRY}/ca.crt")
    assert ca.is_file
    assert ca.user == "root"
    assert ca.mode == 0o644
    assert ca.content_string.strip() == (PROJECT / ".testbed" / "ca" / "ca.crt").read_text().strip()


def test_deploy_user_pulls_from_the_registry(host) -> None:
    host.run(f"docker image rm -f {IMAGE}")
    assert not host.run(f"docker image inspect {IMAGE}").succeeded
    pull = host.run(f"sudo -u deploy -H docker pull {IMAGE}")
    assert pull.succeeded, pull.stderr
    assert "Downloaded newer image" in pull.stdout
    assert host.run(f"docker image inspect {IMAGE}").succeeded


def test_without_the_credentials_the_registry_refuses(host) -> None:
    """Control: root has no stored credentials, so the deploy user's pull above needed them."""
    host.run(f"docker image rm -f {IMAGE}")
    pull = host.run(f"env DOCKER_CONFIG=/nonexistent docker pull {IMAGE}")
    assert not pull.succeeded
    assert "no basic auth credentials" in pull.stderr or "unauthorized" in pull.stderr
