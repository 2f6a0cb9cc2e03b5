"""deploy.sh on a real server: installed root-owned, its options are the playbooks' options, and
the deploy user can deploy v1, then v2, re-run, check, roll back and read the status over the same
swap engine. The tests run in file order: each one starts from the state the previous one left."""
from __future__ import annotations

import json
import shlex
import time

import pytest

APP_DIR = "/opt/todo"
INSTALL_DIR = "/usr/local/lib/greenlight/todo"
DEPLOY_SH = f"{APP_DIR}/deploy.sh"
REPOSITORY = "registry.greenlight.test:5000/greenlight/todo"


def as_deploy(host, *args: str):
    """Run deploy.sh the way a person does over SSH: as the deploy user (it re-runs itself with sudo)."""
    return host.run("cd /home/deploy && sudo -u deploy -H " + shlex.join([DEPLOY_SH, *args]))


def as_deploy_write(host, path: str, content: str, mode: str):
    """Write a file as the deploy user."""
    return host.run("printf %s " + shlex.quote(content) + f" | sudo -u deploy sh -c 'cat > {path} && chmod {mode} {path}'")


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
    directory = host.file(INSTALL_DIR)
    assert directory.is_directory and directory.user == "root" and directory.mode == 0o755
    script = host.file(f"{INSTALL_DIR}/deploy.sh")
    assert script.user == "root" and script.mode == 0o755
    for name in ("greenlight.zip", "deploy.json"):
        installed = host.file(f"{INSTALL_DIR}/{name}")
        assert installed.is_file and installed.user == "root" and installed.mode == 0o644, name
    # The engine is the package greenlight inside the archive, the one deploy.sh imports; the
    # directory of the layout before the archive is gone.
    listing = host.check_output(f"python3 -m zipfile -l {INSTALL_DIR}/greenlight.zip")
    for name in ("__init__.py", "swap.py", "docker_api.py", "proxy_nginx.py", "cli.py", "drain.py"):
        assert f"greenlight/{name}" in listing, name
    assert not host.file(f"{INSTALL_DIR}/greenlight").exists
    link = host.file(DEPLOY_SH)
    assert link.is_symlink and link.linked_to == f"{INSTALL_DIR}/deploy.sh"


def test_sudo_rule_covers_only_the_root_owned_script(host) -> None:
    rule = host.file("/etc/sudoers.d/greenlight-todo-deploy")
    assert rule.user == "root" and rule.mode == 0o440
    assert rule.content_string.strip().splitlines()[-1] == f"deploy ALL=(root) NOPASSWD: {INSTALL_DIR}/deploy.sh"
    assert host.run("visudo -cf /etc/sudoers.d/greenlight-todo-deploy").rc == 0
    # Exercised as the deploy user: sudo lists exactly deploy.sh (and the proxy role's nginx test
    # and reload), runs deploy.sh without a password, and refuses anything else.
    listed = host.run("sudo -u deploy sudo -n -l")
    assert listed.rc == 0, listed.stderr
    commands = sorted(line.strip() for line in listed.stdout.splitlines() if "NOPASSWD:" in line)
    assert commands == sorted([f"(root) NOPASSWD: {INSTALL_DIR}/deploy.sh",
                               "(root) NOPASSWD: /usr/sbin/nginx -t, /usr/sbin/nginx -s reload"]), listed.stdout
    ran = host.run(f"cd / && sudo -u deploy sudo -n {INSTALL_DIR}/deploy.sh status --json")
    assert ran.rc == 0, ran.stderr
    assert json.loads(ran.stdout)["app"] == "todo"
    for other in ("/bin/sh -c id", "/usr/bin/id", f"/bin/sh {INSTALL_DIR}/deploy.sh status", "/usr/bin/docker ps",
                  "/usr/sbin/nginx -s stop", f"/usr/bin/env {INSTALL_DIR}/deploy.sh status"):
        refused = host.run(f"cd / && sudo -u deploy sudo -n {other}")
        assert refused.rc != 0 and "password is required" in refused.stderr, other


def test_deploy_user_cannot_use_docker_or_read_the_registry_login(host) -> None:
    """The docker group is root: the deploy user reaches Docker only through deploy.sh."""
    assert "docker" not in host.user("deploy").groups
    denied = host.run("cd / && sudo -u deploy docker ps")
    assert denied.rc != 0 and "permission denied" in denied.stderr.lower()
    assert host.run("sudo -u deploy cat /root/.docker/config.json").rc != 0
    config_dir = host.file("/root/.docker")
    assert (config_dir.user, config_dir.mode) == ("root", 0o700)


def test_deploy_json_holds_the_playbook_options(host) -> None:
    config = json.loads(host.file(f"{INSTALL_DIR}/deploy.json").content_string)
    assert config["image_repository"] == REPOSITORY
    assert config["docker_config"] == "/root/.docker"
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
    # Right after the rollback the lock may still be held by its background stop of the old
    # release (phase stop_old): status names that holder; it frees the lock once the stop is done.
    deadline = time.monotonic() + 30
    while True:
        result = as_deploy(host, "status", "--json")
        assert result.rc == 0, result.stderr
        status = json.loads(result.stdout)
        if status["lock"] is None or time.monotonic() > deadline:
            break
        assert status["lock"]["phase"] in ("stop_old", "done"), status["lock"]
        time.sleep(0.5)
    assert status["live"]["release"] == "v1"
    assert release in [kept["release"] for kept in status["kept"]]
    assert status["lock"] is None
    assert status["last_records"][-1]["action"] == "rollback"
    text = as_deploy(host, "status")
    assert "release v1 is live" in text.stdout and "lock:  free" in text.stdout


# --------------------------------------------------------------------------------------------
# The deploy user trying to make root run something else or write elsewhere
# --------------------------------------------------------------------------------------------
PWNED = "/root/greenlight-pwned"


def plant_evil_config(host) -> str:
    """A deploy.json of the deploy user's whose docker_command and proxy commands would leave
    PWNED behind if root ran them."""
    config = json.loads(host.file(f"{INSTALL_DIR}/deploy.json").content_string)
    config["docker_command"] = "/home/deploy/evil.sh"
    config["docker_config"] = "/home/deploy/.docker"
    config["swap"]["proxy_test_command"] = "/home/deploy/evil.sh"
    config["swap"]["proxy_reload_command"] = "/home/deploy/evil.sh"
    script = f"#!/bin/sh\nid > {PWNED}\n"
    host.run(f"rm -f {PWNED}")
    for path, content, mode in (("/home/deploy/evil.sh", script, "755"),
                                ("/home/deploy/x.json", json.dumps(config), "644")):
        written = as_deploy_write(host, path, content, mode)
        assert written.rc == 0, written.stderr
    return "/home/deploy/x.json"


@pytest.mark.parametrize("argv", [
    ["--config=/home/deploy/x.json", "status"],
    ["--config", "/home/deploy/x.json", "status"],
    ["--conf=/home/deploy/x.json", "status"],
    ["--conf", "/home/deploy/x.json", "v2"],
    ["--co=/home/deploy/x.json", "status"],
    ["status", "--config=/home/deploy/x.json"],
    ["v2", "--config=/home/deploy/x.json", "--no-pull"],
    ["rollback", "--conf=/home/deploy/x.json"],
    ["--", "--config=/home/deploy/x.json"],
], ids=lambda argv: " ".join(argv))
def test_no_argument_makes_root_use_another_configuration(host, argv: list[str]) -> None:
    plant_evil_config(host)
    result = as_deploy(host, *argv)
    assert result.rc == 2, result.stdout + result.stderr
    assert not host.file(PWNED).exists, "root ran a command of the deploy user's configuration"


def test_deploy_user_cannot_change_the_configuration_or_the_registry_login(host) -> None:
    for path in (f"{INSTALL_DIR}/deploy.json", f"{INSTALL_DIR}/deploy.sh", f"{INSTALL_DIR}/greenlight.zip",
                 "/root/.docker/config.json", "/etc/nginx/greenlight/todo-upstream.conf"):
        assert host.run(f"sudo -u deploy sh -c ': >> {path}'").rc != 0, path
    for directory in (INSTALL_DIR, "/root/.docker", "/etc/nginx/greenlight"):
        assert host.run(f"sudo -u deploy touch {directory}/planted").rc != 0, directory
    # A docker config the deploy user writes in its own home (credsStore names a helper root would
    # run) is not what root pulls with.
    helper = "#!/bin/sh\nid > %s\n" % PWNED
    host.run("sudo -u deploy mkdir -p /home/deploy/.docker /home/deploy/bin")
    as_deploy_write(host, "/home/deploy/bin/docker-credential-evil", helper, "755")
    as_deploy_write(host, "/home/deploy/.docker/config.json",
                    '{"credsStore": "evil", "credHelpers": {"registry.greenlight.test:5000": "evil"}}', "600")
    result = host.run(f"cd /home/deploy && sudo -u deploy env PATH=/home/deploy/bin:$PATH DOCKER_CONFIG=/home/deploy/.docker"
                      f" {DEPLOY_SH} v1 --check")
    assert result.rc == 0, result.stderr
    result = host.run(f"cd /home/deploy && sudo -u deploy env PATH=/home/deploy/bin:$PATH {DEPLOY_SH} does-not-exist-either")
    assert result.rc == 1
    assert not host.file(PWNED).exists, "root ran a Docker credential helper of the deploy user's choosing"


def test_deploy_sh_deploys_only_images_of_the_configured_repository(host) -> None:
    before = web_containers(host)
    result = as_deploy(host, "registry.greenlight.test:5000/greenlight/debian:bookworm-slim", "--no-pull")
    assert result.rc == 2 and "image_repository" in result.stderr
    assert web_containers(host) == before


ROOT_ONLY = "/root/greenlight-root-only"
PLANTABLE = [f"{APP_DIR}/releases.jsonl", f"{APP_DIR}/deploy.lock", f"{APP_DIR}/backups", f"{APP_DIR}/data",
             "/var/www/todo/static", "/var/www/todo/static/lists"]


def _plant_as_root(host, path: str, directory: bool) -> None:
    """Replace `path` by a link to ROOT_ONLY, as someone able to write its directory would: on a
    server app_host has made root's, nobody but root (the test stands in for a server not yet
    converged, where the deploy user could: the link is the deploy user's)."""
    if directory:
        host.run(f"rm -rf {ROOT_ONLY} && mkdir -m 700 {ROOT_ONLY}")
    else:
        host.run(f"rm -rf {ROOT_ONLY}; echo ROOT-ONLY > {ROOT_ONLY} && chmod 600 {ROOT_ONLY}")
    planted = host.run(f"mv {path} {path}.aside && ln -s {ROOT_ONLY} {path} && chown -h deploy:deploy {path}")
    assert planted.rc == 0, planted.stderr


def _unplant(host, path: str) -> None:
    host.run(f"rm -f {path} && mv {path}.aside {path}")


@pytest.mark.parametrize("path", PLANTABLE)
def test_deploy_user_cannot_plant_a_symlink(host, path: str) -> None:
    """app_host makes every path root writes, reads or mounts root's: the deploy user can neither
    move one aside nor put a link in its place (nor next to it)."""
    host.run(f"rm -rf {ROOT_ONLY} && mkdir -m 700 {ROOT_ONLY}")
    for attempt in (f"mv {path} {path}.aside", f"ln -sfn {ROOT_ONLY} {path}", f"ln -s {ROOT_ONLY} {path}.planted",
                    f"rm -rf {path}"):
        assert host.run(f"sudo -u deploy sh -c '{attempt}'").rc != 0, attempt
    assert not host.file(path).is_symlink and host.file(path).exists
    assert not host.file(f"{path}.aside").exists and not host.file(f"{path}.planted").exists


@pytest.mark.parametrize("path", [f"{APP_DIR}/releases.jsonl", f"{APP_DIR}/deploy.lock"])
def test_status_never_reads_through_a_planted_symlink(host, path: str) -> None:
    host.run(f"rm -rf {ROOT_ONLY}; echo '{{\"result\": \"ok\", \"release\": \"ROOT-ONLY\", \"pid\": 1}}' > {ROOT_ONLY}"
             f" && chmod 600 {ROOT_ONLY}")
    assert host.run(f"mv {path} {path}.aside && ln -s {ROOT_ONLY} {path}").rc == 0
    try:
        for args in (["status"], ["status", "--json"]):
            result = as_deploy(host, *args)
            assert "ROOT-ONLY" not in result.stdout + result.stderr
    finally:
        _unplant(host, path)


# The engine's own defence, for a link planted before app_host made these paths root's: whatever it
# then does (refuse, or replace a link at a file name), nothing is written through the link and a
# linked data/ is never mounted into the app.
@pytest.mark.parametrize("path", PLANTABLE)
def test_deploy_never_writes_through_a_planted_symlink(host, path: str) -> None:
    directory = path.endswith(("/lists", "/backups", "/data", "/static"))
    _plant_as_root(host, path, directory)
    live = live_release(host)
    try:
        result = as_deploy(host, "v2" if live == "v1" else "v1")
        if directory:
            assert host.run(f"ls -A {ROOT_ONLY}").stdout.strip() == "", "root wrote through " + path
        else:
            assert host.file(ROOT_ONLY).content_string == "ROOT-ONLY\n", "root wrote through " + path
        if path.endswith("/data"):
            assert result.rc == 1 and f"{path}:/data" in result.stderr and "symbolic link" in result.stderr, \
                result.stdout + result.stderr
            assert live_release(host) == live
            mounted = host.check_output("docker ps -a --filter label=greenlight.app=todo "
                                        "--format '{{.ID}}' | xargs -r docker inspect --format "
                                        "'{{range .Mounts}}{{.Source}} {{end}}'")
            assert ROOT_ONLY not in mounted
    finally:
        _unplant(host, path)
        as_deploy(host, "v1")
