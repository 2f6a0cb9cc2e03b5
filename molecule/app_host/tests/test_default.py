"""State of a server after greenlight.deploy.app_host, and data surviving app containers."""
from __future__ import annotations

import pytest

APP_DIR = "/opt/demoapp"
CONTAINER_UID = 10001
IMAGE = "greenlight/todo:v1"
TEST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIiby4BQigs9papIofWJw0XkWU+GouQk+BrsDZI5HcdP ci@greenlight.test"


def test_deploy_user(host):
    user = host.user("deploy")
    assert user.exists
    assert user.uid < 1000  # system user
    assert user.group == "deploy"
    assert user.shell == "/bin/bash"
    assert user.home == "/home/deploy"
    assert host.file("/home/deploy").user == "deploy"


def test_authorized_keys(host):
    ssh_dir = host.file("/home/deploy/.ssh")
    assert ssh_dir.is_directory and ssh_dir.user == "deploy" and ssh_dir.mode == 0o700
    keys = host.file("/home/deploy/.ssh/authorized_keys")
    assert keys.user == "deploy" and keys.mode == 0o600
    assert TEST_KEY in keys.content_string.splitlines()


@pytest.mark.parametrize(
    "path, kind, owner, group, mode",
    [
        (APP_DIR, "directory", "root", "deploy", 0o750),
        (f"{APP_DIR}/data", "directory", CONTAINER_UID, "deploy", 0o750),
        (f"{APP_DIR}/backups", "directory", "root", "deploy", 0o750),
        (f"{APP_DIR}/releases.jsonl", "file", "root", "deploy", 0o640),
        (f"{APP_DIR}/deploy.lock", "file", "root", "deploy", 0o640),
        ("/var/www/demoapp", "directory", "root", "deploy", 0o755),
        ("/var/www/demoapp/static", "directory", "root", "deploy", 0o755),
    ],
)
def test_paths(host, path, kind, owner, group, mode):
    f = host.file(path)
    assert f.exists, path
    assert f.is_directory if kind == "directory" else f.is_file
    if isinstance(owner, int):
        assert f.uid == owner
    else:
        assert f.user == owner
    assert f.group == group
    assert f.mode == mode


def test_audit_log_kept_when_role_reapplied(host):
    # converge.yml appends a line and applies the role again.
    assert '"release": "molecule-test"' in host.file(f"{APP_DIR}/releases.jsonl").content_string


# What root writes, reads or bind-mounts there must not be the deploy user's to choose: a leaked
# CI key could otherwise swap data/ for a link to /etc (mounted into the app) or plant links root
# writes through. It reads what it needs (audit log, lock holder, backups) through its group.
@pytest.mark.parametrize("attempt", [
    f"touch {APP_DIR}/planted",
    f"mv {APP_DIR}/data {APP_DIR}/data.aside",
    f"ln -s /etc {APP_DIR}/data",
    f"rm -f {APP_DIR}/releases.jsonl",
    f"mv {APP_DIR}/deploy.lock {APP_DIR}/deploy.lock.aside",
    f"ln -sf /root/x {APP_DIR}/releases.jsonl",
    f": >> {APP_DIR}/releases.jsonl",
    f": >> {APP_DIR}/deploy.lock",
    f"mv {APP_DIR}/backups {APP_DIR}/backups.aside",
    f"touch {APP_DIR}/backups/planted",
    f"ln -s /root {APP_DIR}/backups/demoapp-planted.sqlite3",
    "touch /var/www/demoapp/static/planted",
    "ln -s /root /var/www/demoapp/static/lists",
    "mv /var/www/demoapp/static /var/www/demoapp/static.aside",
    "mv /var/www/demoapp /var/www/demoapp.aside",
    "ln -s /etc /var/www/demoapp/planted",
    f"touch {APP_DIR}/data/deploy-was-here",
    f"chmod 777 {APP_DIR}",
])
def test_deploy_user_cannot_create_replace_or_rename_anything(host, attempt):
    assert host.run(f"sudo -u deploy sh -c '{attempt}'").rc != 0, attempt
    for path in (f"{APP_DIR}/data", f"{APP_DIR}/backups", "/var/www/demoapp/static"):
        assert host.file(path).is_directory and not host.file(path).is_symlink, path
    for path in (f"{APP_DIR}/releases.jsonl", f"{APP_DIR}/deploy.lock"):
        assert host.file(path).is_file and not host.file(path).is_symlink, path
    for path in (f"{APP_DIR}/planted", f"{APP_DIR}/backups/planted", "/var/www/demoapp/static/planted",
                 "/var/www/demoapp/static/lists", "/var/www/demoapp/planted", f"{APP_DIR}/data/deploy-was-here"):
        assert not host.file(path).exists, path


def test_deploy_user_reads_the_audit_log_and_the_backups(host):
    for command in (f"cat {APP_DIR}/releases.jsonl", f"cat {APP_DIR}/deploy.lock", f"ls {APP_DIR}/backups"):
        result = host.run(f"sudo -u deploy {command}")
        assert result.rc == 0, result.stderr


def test_nginx_reads_the_static_root(host):
    host.run("printf 'body{}' > /var/www/demoapp/static/probe.css && chmod 644 /var/www/demoapp/static/probe.css")
    try:
        result = host.run("sudo -u www-data cat /var/www/demoapp/static/probe.css")
        assert result.rc == 0 and result.stdout == "body{}", result.stderr
    finally:
        host.run("rm -f /var/www/demoapp/static/probe.css")


def _run_app_container(host, name: str) -> None:
    host.check_output(
        f"docker run -d --name {name} --label greenlight.app=demoapp "
        f"-v {APP_DIR}/data:/data {IMAGE} sleep infinity"
    )


def test_data_survives_app_containers(host):
    """Rows written by one app container (uid 10001) are read by the next after removal."""
    write = (
        "import sqlite3; c = sqlite3.connect('/data/test.sqlite3'); "
        "c.execute('create table if not exists todo (title text)'); "
        "c.executemany('insert into todo values (?)', [('buy milk',), ('ship v2',)]); c.commit()"
    )
    read = (
        "import sqlite3; c = sqlite3.connect('/data/test.sqlite3'); "
        "print('|'.join(r[0] for r in c.execute('select title from todo order by rowid')))"
    )
    try:
        host.run("docker rm -f gl-data-a gl-data-b; rm -f /opt/demoapp/data/test.sqlite3")
        _run_app_container(host, "gl-data-a")
        assert host.check_output("docker exec gl-data-a id -u") == str(CONTAINER_UID)
        host.check_output(f'docker exec gl-data-a python -c "{write}"')

        # Every app container goes away; only the host directory remains.
        host.check_output("docker ps -aq --filter label=greenlight.app=demoapp | xargs -r docker rm -f")
        assert host.check_output("docker ps -aq --filter label=greenlight.app=demoapp") == ""

        db = host.file(f"{APP_DIR}/data/test.sqlite3")
        assert db.is_file and db.uid == CONTAINER_UID

        _run_app_container(host, "gl-data-b")
        assert host.check_output(f'docker exec gl-data-b python -c "{read}"') == "buy milk|ship v2"

        # The deploy user (group of data/) can take a consistent backup without root (into a
        # directory of its own: backups/ is root's, where the engine puts its snapshots).
        backup = "/home/deploy/test-backup.sqlite3"
        cmd = host.run(f"sudo -u deploy sqlite3 {APP_DIR}/data/test.sqlite3 \".backup '{backup}'\"")
        assert cmd.rc == 0, cmd.stderr
        assert host.check_output(f"sqlite3 {backup} 'select count(*) from todo'") == "2"
    finally:
        host.run("docker rm -f gl-data-a gl-data-b; rm -f /home/deploy/test-backup.sqlite3")
