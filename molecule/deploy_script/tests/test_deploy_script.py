"""deploy.sh on a real server: installed root-owned, its options are the playbooks' options, and
the deploy user can deploy v1, then v2, re-run, check, roll back and read the status over the same
swap engine. The tests run in file order: each one starts from the state the previous one left."""
from __future__ import annotations

import json
import shlex

import pytest

APP_DIR = "/opt/todo"
INSTALL_DIR = "/usr/local/lib/greenlight/todo"
DEPLOY_SH = f"{APP_DIR}/deploy.sh"
REPOSITORY = "registry.greenlight.test:5000/greenlight/todo"


def as_deploy(host, *args: str):
    """Run deploy.sh the way a person does over SSH: as the deploy user (it re-runs itself with sudo)."""
    return host.run("cd /home/deploy && sudo -u deploy -H " + shlex.join([DEPLOY_SH, *args]))


def served(host, path: str = "/health") -> tuple[int, dict[str, str], str]:
    """GET through the server's nginx on port 80: (status, lower-cased headers, body)."""
    out = host.check_output("curl -s -i --max-time 10 http://127.0.0.1%s", path)
    head, _, body = out.replace("\r\n", "\n").partition("\n\n")
    lines = head.splitlines()
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return status, headers, body


def live_release(host) -> str | None:
    status, headers, _body = served(host)
    return headers.get("x-release") if status == 200 else None


def web_containers(host) -> list[str]:
    return host.check_output(
        "docker ps -a --filter label=greenlight.app=todo --filter label=greenlight.service=web --format '{{.ID}}'"
    ).split()


def last_record(host) -> dict:
    return json.loads(host.file(f"{APP_DIR}/releases.jsonl").content_string.strip().splitlines()[-1])


def test_engine_and_script_are_root_owned(host) -> None:
    for path in (INSTALL_DIR, f"{INSTALL_DIR}/greenlight"):
        directory = host.file(path)
        assert directory.is_directory and directory.user == "root" and directory.mode == 0o755
    script = host.file(f"{INSTALL_DIR}/deploy.sh")
    assert script.user == "root" and script.mode == 0o755
    for name in ("__init__.py", "_swap.py", "_docker_api.py", "_proxy_nginx.py", "_swap_cli.py", "../deploy.json"):
        installed = host.file(f"{INSTALL_DIR}/greenlight/{name}")
        assert installed.is_file and installed.user == "root" and installed.mode == 0o644, name
    link = host.file(DEPLOY_SH)
    assert link.is_symlink and link.linked_to == f"{INSTALL_DIR}/deploy.sh"


def test_sudo_rule_covers_only_the_root_owned_script(host) -> None:
    rule = host.file("/etc/sudoers.d/greenlight-todo-deploy")
    assert rule.user == "root" and rule.mode == 0o440
    assert rule.content_string.strip().splitlines()[-1] == f"deploy ALL=(root) NOPASSWD: {INSTALL_DIR}/deploy.sh"
    assert host.run("visudo -cf /etc/sudoers.d/greenlight-todo-deploy").rc == 0


def test_deploy_json_holds_the_playbook_options(host) -> None:
    config = json.loads(host.file(f"{INSTALL_DIR}/deploy.json").content_string)
    assert config["image_repository"] == REPOSITORY
    assert config["docker_config"] == "/home/deploy/.docker"
    swap = config["swap"]
    assert swap["app_name"] == "todo"
    assert swap["env_file"] == "/opt/todo/todo.env"
    assert swap["mounts"] == ["/opt/todo/data:/data"]
    assert swap["pre_switch_commands"] == ["python manage.py migrate --noinput"]
    assert swap["static_source"] == "/app/static" and swap["static_root"] == "/var/www/todo/static"
    assert swap["sqlite_path"] == "/opt/todo/data/db.sqlite3"
    assert swap["upstream_file"] == "/etc/nginx/greenlight/todo-upstream.conf"
    assert swap["host_ports"] == [8001, 8002] and swap["container_port"] == 8000
    assert swap["drain_seconds"] == 1.0 and swap["health_timeout"] == 20.0
    assert swap["proxy_verify_url"] == "http://127.0.0.1/health"
    assert not {"image", "mode", "release", "rollback_release", "actor", "check_mode"} & set(swap)


def test_without_arguments_prints_usage(host) -> None:
    result = as_deploy(host)
    assert result.rc == 2
    assert "usage" in result.stderr.lower()


def test_unknown_tag_fails_at_the_pull_and_changes_nothing(host) -> None:
    before = web_containers(host)
    status_before = served(host)[0]
    result = as_deploy(host, "does-not-exist")
    assert result.rc == 1
    assert f"{REPOSITORY}:does-not-exist" in result.stderr
    assert "nothing was changed" in result.stderr
    assert web_containers(host) == before
    assert served(host)[0] == status_before


def test_deploy_v1(host) -> None:
    result = as_deploy(host, "v1")
    assert result.rc == 0, result.stderr
    assert "put release v1 live" in result.stdout
    assert live_release(host) == "v1"
    status, _headers, _body = served(host, "/static/lists/style.css")
    assert status == 200
    record = last_record(host)
    assert record["result"] == "ok" and record["release"] == "v1" and record["action"] == "deploy"
    assert record["actor"]["user"] == "deploy"  # sudo keeps who ran it
    assert record["image_digest"].startswith(REPOSITORY + "@sha256:")


def test_deploy_v2(host) -> None:
    result = as_deploy(host, "v2")
    assert result.rc == 0, result.stderr
    assert "put release v2 live" in result.stdout and "previous release v1" in result.stdout
    assert live_release(host) == "v2"
    record = last_record(host)
    assert record["release"] == "v2" and record["previous_release"] == "v1"
    assert record["snapshot"].startswith("/opt/todo/backups/todo-")


def test_same_deploy_again_changes_nothing(host) -> None:
    containers = web_containers(host)
    lines = len(host.file(f"{APP_DIR}/releases.jsonl").content_string.splitlines())
    result = as_deploy(host, "v2")
    assert result.rc == 0, result.stderr
    assert "nothing changed" in result.stdout
    assert web_containers(host) == containers
    assert len(host.file(f"{APP_DIR}/releases.jsonl").content_string.splitlines()) == lines


def test_check_mode_predicts_without_changing(host) -> None:
    result = as_deploy(host, "v1", "--check")
    assert result.rc == 0, result.stderr
    assert "would put release v1 live" in result.stdout
    assert live_release(host) == "v2"


def test_rollback_to_the_previous_release(host) -> None:
    result = as_deploy(host, "rollback")
    assert result.rc == 0, result.stderr
    assert "put release v1 live (rollback; previous release v2)" in result.stdout
    assert live_release(host) == "v1"
    assert last_record(host)["action"] == "rollback"


@pytest.mark.parametrize("release", ["v2"])
def test_status_names_live_and_kept_releases(host, release: str) -> None:
    result = as_deploy(host, "status", "--json")
    assert result.rc == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["live"]["release"] == "v1"
    assert release in [kept["release"] for kept in status["kept"]]
    assert status["lock"] is None
    assert status["last_records"][-1]["action"] == "rollback"
    text = as_deploy(host, "status")
    assert "release v1 is live" in text.stdout and "lock:  free" in text.stdout
