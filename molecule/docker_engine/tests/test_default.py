"""State of a server after greenlight.deploy.docker_engine (Docker installed by the role)."""
from __future__ import annotations

import json


def test_docker_package_installed(host):
    assert host.package("docker.io").is_installed


def test_docker_service_running_and_enabled(host):
    docker = host.service("docker")
    assert docker.is_running
    assert docker.is_enabled


def test_docker_socket_answers(host):
    assert host.socket("unix:///run/docker.sock").is_listening
    out = host.check_output("docker info --format '{{.ServerVersion}}'")
    assert out.strip()


def test_daemon_json_file(host):
    f = host.file("/etc/docker/daemon.json")
    assert f.is_file
    assert f.user == "root" and f.group == "root"
    assert f.mode == 0o644
    config = json.loads(f.content_string)
    assert config == {
        "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "5"},
        "live-restore": True,
    }


def test_running_daemon_uses_the_config(host):
    # The daemon was restarted after daemon.json changed: the live values come from the file.
    out = host.check_output("docker info --format '{{.LoggingDriver}} {{.LiveRestoreEnabled}}'")
    assert out.split() == ["json-file", "true"]


def test_new_containers_get_rotated_logs(host):
    # Log options are applied to containers; check them through a created (never started)
    # container so no image pull is needed: import an empty image from an empty tarball.
    host.check_output("tar -cf /tmp/empty.tar -T /dev/null && docker import /tmp/empty.tar gl-empty:test")
    try:
        host.check_output("docker create --name gl-logcheck gl-empty:test /nothing")
        out = host.check_output("docker inspect --format '{{json .HostConfig.LogConfig}}' gl-logcheck")
        assert json.loads(out) == {"Type": "json-file", "Config": {"max-file": "5", "max-size": "10m"}}
    finally:
        host.run("docker rm -f gl-logcheck; docker rmi gl-empty:test")


def test_deploy_user_created_and_in_docker_group(host):
    user = host.user("deploy")
    assert user.exists
    assert "docker" in user.groups
    assert user.uid < 1000  # system user
    assert user.shell == "/bin/bash"
    assert host.file(user.home).is_directory


def test_deploy_user_can_talk_to_docker(host):
    cmd = host.run("sudo -u deploy docker info --format '{{.LoggingDriver}}'")
    assert cmd.rc == 0, cmd.stderr
    assert cmd.stdout.strip() == "json-file"


def test_existing_user_keeps_shell_and_gains_group(host):
    user = host.user("operator1")
    assert "docker" in user.groups
    assert user.shell == "/bin/sh"
