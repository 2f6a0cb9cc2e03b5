"""What setup.yml leaves on each server (staging and production): Docker running, the deploy
user reaching it only through deploy.sh, the env file with this environment's values, registry credentials that
pull, nginx answering 503 until the first release, deploy.sh in place."""
from __future__ import annotations

import json
import os
import pathlib

import pytest

REGISTRY = "registry.greenlight.test:5000"
IMAGE = f"{REGISTRY}/greenlight/debian:bookworm-slim"
ENV_FILE = "/opt/todo/todo.env"
EPHEMERAL = pathlib.Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])


def environment(host) -> str:
    return host.backend.get_hostname().removeprefix("gl-setup-")


def test_docker_engine_is_active(host) -> None:
    assert host.service("docker").is_running
    assert host.service("docker").is_enabled
    assert host.run("docker info --format '{{.ServerVersion}}'").succeeded


def test_deploy_user_reaches_docker_only_through_deploy_sh(host) -> None:
    """The docker group is root: the deploy user is not in it and cannot read root's registry login."""
    assert "docker" not in host.user("deploy").groups
    assert not host.run("sudo -u deploy docker ps").succeeded
    assert not host.run("sudo -u deploy cat /root/.docker/config.json").succeeded
    assert host.run("cd / && sudo -u deploy /opt/todo/deploy.sh status").succeeded


@pytest.mark.parametrize("path, mode", [("/opt/todo", 0o750), ("/opt/todo/backups", 0o750),
                                        ("/opt/todo/releases.jsonl", 0o640), ("/opt/todo/deploy.lock", 0o640),
                                        ("/var/www/todo", 0o755), ("/var/www/todo/static", 0o755)])
def test_paths_of_an_earlier_version_are_roots_now(host, path: str, mode: int) -> None:
    """prepare.yml laid them out deploy-owned (and group-writable), as an earlier version did."""
    f = host.file(path)
    assert (f.user, f.group, f.mode) == ("root", "deploy", mode)
    assert host.run(f"sudo -u deploy sh -c 'mv {path} {path}.aside'").rc != 0


def test_directories_above_that_an_earlier_version_gave_the_deploy_user_are_roots(host) -> None:
    """The file module made /var/www (created on the way to /var/www/todo) the deploy user's."""
    f = host.file("/var/www")
    assert f.user == "root" and not f.mode & 0o022
    assert host.run("sudo -u deploy sh -c 'mv /var/www/todo /var/www/todo.aside'").rc != 0
    assert host.file("/var/www/todo/static").is_directory


def test_audit_log_of_an_earlier_version_is_kept(host) -> None:
    assert "from-an-earlier-version" in host.file("/opt/todo/releases.jsonl").content_string


def test_env_file_holds_this_environments_values(host) -> None:
    env_file = host.file(ENV_FILE)
    assert env_file.is_file and env_file.user == "deploy" and env_file.mode == 0o600
    variables = dict(line.split("=", 1) for line in env_file.content_string.splitlines()
                     if line and not line.startswith("#"))
    assert set(variables) == {"DJANGO_ALLOWED_HOST", "DJANGO_DB_PATH", "DJANGO_DEBUG_FALSE",
                              "DJANGO_SECRET_KEY", "EMAIL_HOST_PASSWORD"}
    env = environment(host)
    assert variables["DJANGO_ALLOWED_HOST"] == ("staging" if env == "staging" else "www") + ".greenlight.test"
    assert variables["DJANGO_SECRET_KEY"] == (EPHEMERAL / "canary-secret-key").read_text().strip()
    # From group_vars/<env>/vault.yml, decrypted with vault id <env>.
    assert variables["EMAIL_HOST_PASSWORD"].startswith(f"{env}-vault-value-")


def test_registry_credentials_are_private_and_pull(host) -> None:
    config = host.file("/root/.docker/config.json")
    assert config.user == "root" and config.mode == 0o600
    assert host.file("/root/.docker").mode == 0o700
    assert REGISTRY in json.loads(config.content_string)["auths"]
    host.run(f"docker image rm -f {IMAGE}")
    pull = host.run(f"env DOCKER_CONFIG=/root/.docker docker pull {IMAGE}")
    assert pull.succeeded, pull.stderr


@pytest.mark.parametrize("url", ["http://127.0.0.1/", "http://127.0.0.1/some/page"])
def test_nginx_answers_503_until_the_first_release(host, url) -> None:
    assert host.service("nginx").is_running
    result = host.run(f"curl -s -o /dev/stderr -w '%{{http_code}}' --max-time 10 {url}")
    assert result.stdout == "503"
    assert "no release deployed yet" in result.stderr


def test_upstream_points_at_the_placeholder(host) -> None:
    upstream = host.file("/etc/nginx/greenlight/todo-upstream.conf")
    assert upstream.content_string.strip() == "server 127.0.0.1:8099;"


def test_deploy_script_is_installed(host) -> None:
    assert host.file("/opt/todo/deploy.sh").exists
    usage = host.run("sudo -u deploy /opt/todo/deploy.sh --help")
    assert usage.rc == 0, usage.stderr
    assert "usage: deploy.sh" in usage.stdout
