"""End to end, the way a CI step runs it: ansible-playbook over real SSH to two server containers.

A controller "checkout" (tmp dir laid out like a user's app repository, deploy/inventories/) holds
the staging and production inventories, vault-encrypted group_vars (vault ids staging and
production, passwords from environment variables through deploy/vault-pass-from-env-client.sh),
a deploy key and a known_hosts file with the servers' real host keys (host key checking on).
The deploy and promote commands are read from ci-templates/deploy-command.txt and
promote-command.txt, the very lines the CI templates run (tests/ci_templates checks that).

Story (tests run in file order, each from the state the previous one left): setup.yml on both
servers (pipelining off, servers without acl) -> deploy v1 to staging (pipelining off) -> the example app's functional tests against staging's nginx ->
promote to production (same digest) -> deploy v2 -> rollback (v1) -> deploy bad-health (fails,
v1 keeps serving) -> deploy.sh v2 by hand over SSH -> promote with git tags (local bare repo)
-> bad input: a tag that does not exist, no
app_image_tag, an unreachable server, a server whose host key does not match -> fleet: both
servers in one group, one fails: the other is put back (one batch) or stays (earlier batch).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import time
import typing as t
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from gltest import REPO, TESTBED_STATE, VENV_BIN, ansible_env, free_port

pytestmark = [pytest.mark.slow, pytest.mark.docker]

DEPLOY_COMMAND = (REPO / "ci-templates" / "deploy-command.txt").read_text(encoding="utf-8").strip()
PROMOTE_COMMAND = (REPO / "ci-templates" / "promote-command.txt").read_text(encoding="utf-8").strip()
SERVER_IMAGE = "greenlight/server-docker:bookworm"
REGISTRY = "registry.greenlight.test:5000"
REPOSITORY = f"{REGISTRY}/greenlight/todo"
PREFIX = "gle2e"
KEEP = os.environ.get("GREENLIGHT_E2E_KEEP") == "1"  # leave the servers running for a look


def sh(*argv: str, check: bool = True, **kw: t.Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, **kw)


class Server:
    """A server container: systemd, sshd, Docker; SSH and nginx published on 127.0.0.1."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.name = f"{PREFIX}-{role}-{secrets.token_hex(3)}"
        self.ssh_port = free_port()
        self.http_port = free_port()
        self.host_key = ""

    def start(self) -> None:
        script = (f"source {shlex.quote(str(REPO / 'testbed' / 'server-run.sh'))} && "
                  f"server_run {self.name} {SERVER_IMAGE} -p 127.0.0.1:{self.ssh_port}:22 "
                  f"-p 127.0.0.1:{self.http_port}:80")
        sh("bash", "-c", script)

    def exec(self, command: str, check: bool = True, user: str | None = None) -> subprocess.CompletedProcess[str]:
        return sh("docker", "exec", *(["-u", user] if user else []), self.name, "sh", "-c", command, check=check)

    def prepare(self, public_key: str) -> None:
        """What a fresh VM has: an admin user with sudo who accepts our key; the host keys."""
        deadline = time.monotonic() + 60
        while self.exec("test -s /etc/ssh/ssh_host_ed25519_key.pub && systemctl is-active -q ssh",
                        check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"sshd did not come up in {self.name}")
            time.sleep(0.5)
        self.exec("id admin >/dev/null 2>&1 || useradd -m -s /bin/bash admin; "
                  "echo 'admin ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/admin && chmod 0440 /etc/sudoers.d/admin; "
                  "install -d -m 0700 -o admin -g admin /home/admin/.ssh; "
                  f"echo {shlex.quote(public_key)} > /home/admin/.ssh/authorized_keys; "
                  "chown admin:admin /home/admin/.ssh/authorized_keys; chmod 0600 /home/admin/.ssh/authorized_keys")
        key_type, key = self.exec("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2]
        self.host_key = f"{key_type} {key}"
        # Like Debian's minimal and cloud images: no acl package, so no setfacl for become_user.
        self.exec("if dpkg -s acl >/dev/null 2>&1; then DEBIAN_FRONTEND=noninteractive apt-get remove -y -q acl; fi")
        assert self.exec("command -v setfacl", check=False).returncode != 0

    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.ssh_port} {self.host_key}"

    def get(self, path: str = "/health") -> tuple[int, str | None, str]:
        """GET through the server's nginx (published port): (status, X-Release, body)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as response:
                return response.status, response.headers.get("X-Release"), response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.headers.get("X-Release"), err.read().decode()

    def live_release(self) -> str | None:
        status, release, _body = self.get()
        return release if status == 200 else None

    def records(self) -> list[dict[str, t.Any]]:
        text = self.exec("cat /opt/todo/releases.jsonl").stdout
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def web_containers(self) -> list[str]:
        return self.exec("docker ps -a -q --filter label=greenlight.app=todo --filter label=greenlight.service=web"
                         ).stdout.split()

    def remove(self) -> None:
        sh("docker", "rm", "-f", "-v", self.name, check=False)
        sh("docker", "volume", "rm", f"{self.name}-docker", check=False)


def group_vars(server: Server, key: Path, known_hosts: Path, public_key: str) -> dict[str, t.Any]:
    """Plain settings of one environment, as a user writes them (secrets only referenced)."""
    return {
        "ansible_host": "127.0.0.1",
        "ansible_port": server.ssh_port,
        "ansible_user": "admin",
        # admin logs in and becomes root with sudo, as on a cloud VM (setup.yml needs root).
        "ansible_become": True,
        "ansible_python_interpreter": "/usr/bin/python3",
        "ansible_ssh_private_key_file": str(key),
        # Host key checking stays on: only the keys read from the servers are trusted.
        "ansible_ssh_common_args": f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes",
        "greenlight_app_name": "todo",
        "greenlight_registry": REGISTRY,
        "greenlight_image_repository": REPOSITORY,
        "app_env_vars": {"DJANGO_ALLOWED_HOST": "127.0.0.1,localhost", "DJANGO_DEBUG_FALSE": "1",
                         "DJANGO_DB_PATH": "/data/db.sqlite3"},
        "app_env_secrets": {"DJANGO_SECRET_KEY": "{{ vault_django_secret_key }}"},
        "registry_login_username": "greenlight",
        "registry_login_password": "{{ vault_registry_token }}",
        "registry_login_ca_certificate_file": str(TESTBED_STATE / "ca" / "ca.crt"),
        # setup.yml proves the login with a pull as the deploy user (become_user).
        "registry_login_check_image": f"{REPOSITORY}:v1",
        "app_host_authorized_keys": [public_key],
        "deploy_script_public_url": f"http://127.0.0.1:{server.http_port}/",
        # Small waits keep the run short; production values are the role defaults.
        "deploy_script_drain_seconds": 1,
        "deploy_script_stop_grace_seconds": 3,
        "deploy_script_health_timeout": 6,
    }


def write_inventory(checkout: Path, env: str, servers: dict[str, Server], settings: dict[str, t.Any],
                    vault_password: str) -> None:
    inventory = checkout / "inventories" / env
    (inventory / "group_vars" / env).mkdir(parents=True, exist_ok=True)
    hosts = {env: {"hosts": {name: {"ansible_port": s.ssh_port} for name, s in servers.items()}}}
    (inventory / "hosts.yml").write_text(json.dumps(hosts, indent=2))
    (inventory / "group_vars" / env / "vars.yml").write_text(json.dumps(settings, indent=2))
    vault = inventory / "group_vars" / env / "vault.yml"
    vault.write_text(json.dumps({
        "vault_django_secret_key": secrets.token_urlsafe(40),
        "vault_registry_token": (TESTBED_STATE / "registry-password").read_text().strip(),
    }))
    password_file = checkout.parent / f"{env}.vault-pass"
    password_file.write_text(vault_password)
    sh(str(VENV_BIN / "ansible-vault"), "encrypt", "--vault-id", f"{env}@{password_file}", str(vault),
       env=ansible_env())
    password_file.unlink()


class Bed:
    """Everything the story needs; `run` executes a command in the checkout like a CI step."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.checkout = base / "checkout"
        self.staging = Server("staging")
        self.production = Server("production")
        self.key = base / "deploy_key"
        self.known_hosts = base / "known_hosts"
        self.passwords = {"staging": secrets.token_urlsafe(24), "production": secrets.token_urlsafe(24)}
        self.log = base / "commands.log"

    def up(self) -> None:
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "greenlight-e2e-ci", "-f", str(self.key))
        public_key = (self.base / "deploy_key.pub").read_text().strip()
        for server in (self.staging, self.production):
            server.start()
        for server in (self.staging, self.production):
            server.prepare(public_key)
        self.known_hosts.write_text(self.staging.known_hosts_line() + "\n" + self.production.known_hosts_line() + "\n")
        # The CI checkout, laid out as `greenlight.deploy.init` writes an app repository: the user's
        # inventories in deploy/inventories (also reachable as inventories/) and the vault client in
        # deploy/; the CI commands name playbooks by FQCN, the other tests also as playbooks/*.yml.
        (self.checkout / "deploy" / "inventories").mkdir(parents=True)
        (self.checkout / "inventories").symlink_to("deploy/inventories")
        (self.checkout / "playbooks").symlink_to(REPO / "playbooks")
        (self.checkout / "deploy" / "vault-pass-from-env-client.sh").symlink_to(
            REPO / "inventories" / "vault-pass-from-env-client.sh")
        for env, server in (("staging", self.staging), ("production", self.production)):
            write_inventory(self.checkout, env, {f"{env}1": server},
                            group_vars(server, self.key, self.known_hosts, public_key), self.passwords[env])

    def env(self, **extra: str) -> dict[str, str]:
        env = ansible_env(
            ANSIBLE_HOST_KEY_CHECKING="true",
            ANSIBLE_PIPELINING="true",
            ANSIBLE_VAULT_IDENTITY_LIST="staging@deploy/vault-pass-from-env-client.sh,"
                                        "production@deploy/vault-pass-from-env-client.sh",
            GREENLIGHT_VAULT_PASSWORD_STAGING=self.passwords["staging"],
            GREENLIGHT_VAULT_PASSWORD_PRODUCTION=self.passwords["production"],
            GREENLIGHT_DEPLOY_ACTOR="greenlight e2e",
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks",
        )
        env.pop("GREENLIGHT_VAULT_PASSWORD", None)
        env.update(extra)
        return env

    def run(self, command: str, **extra: str) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        proc = subprocess.run(["bash", "-c", command], cwd=self.checkout, env=self.env(**extra),
                              capture_output=True, text=True, check=False)
        with self.log.open("a") as handle:
            handle.write(f"\n$ {' '.join(f'{k}={v}' for k, v in extra.items())} {command}\n"
                         f"# exit {proc.returncode} after {time.monotonic() - started:.1f}s\n"
                         f"{proc.stdout[-20000:]}{proc.stderr[-5000:]}\n")
        return proc

    def ssh(self, server: Server, user: str, command: str) -> subprocess.CompletedProcess[str]:
        return sh("ssh", "-i", str(self.key), "-p", str(server.ssh_port), "-o", f"UserKnownHostsFile={self.known_hosts}",
                  "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", f"{user}@127.0.0.1", command, check=False)

    def down(self) -> None:
        for server in (self.staging, self.production):
            server.remove()


def tail(proc: subprocess.CompletedProcess[str], lines: int = 60) -> str:
    return "\n".join((proc.stdout + proc.stderr).splitlines()[-lines:])


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory, docker_available: None) -> t.Iterator[Bed]:
    if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.fail("the e2e test needs the OpenSSH client (apt-get install openssh-client)")
    if not (TESTBED_STATE / "registry-password").exists():
        pytest.fail("the test bed is not up: run `make testbed`")
    bed = Bed(tmp_path_factory.mktemp("e2e"))
    try:
        bed.up()
        yield bed
    finally:
        if KEEP:
            sys.stderr.write(f"\ne2e servers kept: {bed.staging.name} {bed.production.name}; log {bed.log}\n")
        else:
            bed.down()


def test_setup_yaml_prepares_both_servers_over_ssh(bed: Bed) -> None:
    # Pipelining off, Ansible's default, on servers without acl: tasks that become the deploy
    # user need setfacl, which app_host installs before the first of them.
    proc = bed.run("ansible-playbook playbooks/setup.yml -i inventories/staging -i inventories/production",
                   ANSIBLE_PIPELINING="False")
    assert proc.returncode == 0, tail(proc)
    for server in (bed.staging, bed.production):
        status, _release, body = server.get()
        assert status == 503 and "no release deployed yet" in body
        assert server.exec("test -x /opt/todo/deploy.sh").returncode == 0
        assert server.exec("command -v setfacl", check=False).returncode == 0


def test_deploy_v1_to_staging_with_the_ci_command(bed: Bed) -> None:
    proc = bed.run(DEPLOY_COMMAND, APP_IMAGE_TAG="v1", ANSIBLE_PIPELINING="False")  # as users run it by default
    assert proc.returncode == 0, tail(proc)
    assert "- staging1: DEPLOYED | live: v1" in proc.stdout
    assert bed.staging.live_release() == "v1"
    record = bed.staging.records()[-1]
    assert record["release"] == "v1" and record["result"] == "ok"
    assert record["actor"]["by"] == "greenlight e2e"
    assert bed.production.get()[0] == 503  # the CI step deploys to staging only


def test_functional_tests_pass_against_staging(bed: Bed) -> None:
    env = dict(os.environ, TODO_BASE_URL=f"http://127.0.0.1:{bed.staging.http_port}", TODO_EXPECT_RELEASE="v1",
               TODO_EXPECT_STATIC="1")
    proc = subprocess.run([str(VENV_BIN / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(REPO / "examples" / "django-app" / "functional_tests")],
                          env=env, capture_output=True, text=True, check=False, cwd=REPO)
    assert proc.returncode == 0, tail(proc)
    assert " passed" in proc.stdout and "skipped" not in proc.stdout.splitlines()[-1]


def test_promote_puts_the_same_digest_on_production(bed: Bed) -> None:
    staging = bed.staging.records()[-1]
    # releases.jsonl is root's (the deploy user only reads it), and an audit record, not a source of
    # truth: a forged last line (another digest, another release) must not change what is promoted;
    # promote reads the live container's image.
    forged = dict(staging, release="forged", image_digest=f"{REPOSITORY}@sha256:{'0' * 64}")
    line = "printf '%s\\n' " + shlex.quote(json.dumps(forged)) + " >> /opt/todo/releases.jsonl"
    assert bed.staging.exec(line, check=False, user="deploy").returncode != 0
    bed.staging.exec(line)
    assert bed.staging.records()[-1]["release"] == "forged"
    try:
        proc = bed.run(PROMOTE_COMMAND)
    finally:
        bed.staging.exec("sed -i '$d' /opt/todo/releases.jsonl")
    assert proc.returncode == 0, tail(proc)
    assert "forged" not in proc.stdout
    assert bed.production.live_release() == "v1"
    staging = bed.staging.records()[-1]
    production = bed.production.records()[-1]
    assert production["image_digest"] == staging["image_digest"]
    assert production["release"] == staging["release"] == "v1"
    # Production pulled by digest, not by tag: what passed on staging, byte for byte.
    digest = staging["image_digest"].split("@")[1]
    assert production["image"] == f"{REPOSITORY}@{digest}"


def test_deploy_v2_to_staging(bed: Bed) -> None:
    proc = bed.run(DEPLOY_COMMAND, APP_IMAGE_TAG="v2")
    assert proc.returncode == 0, tail(proc)
    assert "- staging1: DEPLOYED | live: v2 | previous: v1" in proc.stdout
    assert bed.staging.live_release() == "v2"
    assert bed.production.live_release() == "v1"


def test_check_mode_predicts_and_changes_nothing(bed: Bed) -> None:
    containers = bed.staging.web_containers()
    records = len(bed.staging.records())
    proc = bed.run(DEPLOY_COMMAND + " --check --diff", APP_IMAGE_TAG="v1")
    assert proc.returncode == 0, tail(proc)
    assert "- staging1: WOULD-DEPLOY | live: v2 | wanted: v1" in proc.stdout
    assert '-    "release": "v2"' in proc.stdout and '+    "release": "v1"' in proc.stdout  # --diff
    assert bed.staging.live_release() == "v2"
    assert bed.staging.web_containers() == containers and len(bed.staging.records()) == records


def test_rollback_puts_v1_back(bed: Bed) -> None:
    proc = bed.run("ansible-playbook playbooks/rollback.yml -i inventories/staging")
    assert proc.returncode == 0, tail(proc)
    assert "- staging1: ROLLED-BACK | live: v1" in proc.stdout
    assert bed.staging.live_release() == "v1"


def test_bad_health_fails_and_the_live_release_keeps_serving(bed: Bed) -> None:
    containers = bed.staging.web_containers()
    proc = bed.run(DEPLOY_COMMAND, APP_IMAGE_TAG="bad-health")
    assert proc.returncode != 0
    assert "- staging1: FAILED in health | live: v1 | wanted: bad-health" in proc.stdout, tail(proc)
    assert bed.staging.live_release() == "v1"  # after the rollback above, v1 is what serves
    assert bed.staging.web_containers() == containers  # the new container is gone
    record = bed.staging.records()[-1]
    assert record["result"] == "failed" and record["failed_phase"] == "health"


def test_deploy_sh_by_hand_over_ssh(bed: Bed) -> None:
    proc = bed.ssh(bed.staging, "deploy", "/opt/todo/deploy.sh v2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "put release v2 live" in proc.stdout
    assert bed.staging.live_release() == "v2"
    status = bed.ssh(bed.staging, "deploy", "/opt/todo/deploy.sh status")
    assert status.returncode == 0 and "release v2 is live" in status.stdout
    assert bed.staging.records()[-1]["actor"]["user"] == "deploy"


def test_a_no_op_deploy_skips_the_smoke_check_that_catches_a_dead_nginx(bed: Bed) -> None:
    """Re-deploying the live release changes nothing; the engine's own look through nginx makes
    the playbook's smoke request unnecessary, until nginx does not answer: then the smoke check
    runs, fails, and says so."""
    # The task header, the profile_tasks time line, then the host's status.
    # (The task lives in the role greenlight.deploy.release: its header may carry the role's name.)
    smoke_skipped = re.compile(r"TASK \[(?:greenlight\.deploy\.release : )?Smoke \| Fetch through nginx[^\n]*\n[^\n]*\n"
                               r"skipping: \[staging1\]")
    containers = bed.staging.web_containers()
    proc = bed.run(DEPLOY_COMMAND, APP_IMAGE_TAG="v2")
    assert proc.returncode == 0, tail(proc)
    assert "- staging1: UNCHANGED | live: v2" in proc.stdout, tail(proc)
    assert smoke_skipped.search(proc.stdout), tail(proc, 120)
    bed.staging.exec("systemctl stop nginx")
    try:
        proc = bed.run(DEPLOY_COMMAND, APP_IMAGE_TAG="v2")
    finally:
        bed.staging.exec("systemctl start nginx")
    assert proc.returncode != 0
    assert "- staging1: FAILED in smoke | live: v2" in proc.stdout, tail(proc)
    assert not smoke_skipped.search(proc.stdout)
    assert bed.staging.web_containers() == containers
    assert bed.staging.get()[:2] == (200, "v2")


def test_promote_with_git_tags_tags_the_release_commit(bed: Bed) -> None:
    origin, work = bed.base / "origin.git", bed.base / "work"
    git_env = dict(os.environ, GIT_AUTHOR_NAME="ci", GIT_AUTHOR_EMAIL="ci@example.invalid",
                   GIT_COMMITTER_NAME="ci", GIT_COMMITTER_EMAIL="ci@example.invalid")
    sh("git", "init", "-q", "--bare", str(origin))
    sh("git", "clone", "-q", str(origin), str(work))
    for message in ("release v2", "later work"):
        sh("git", "-C", str(work), "commit", "-q", "--allow-empty", "-m", message, env=git_env)
    # The image tag names a commit (as a short SHA tag does): that commit is tagged, not HEAD.
    sh("git", "-C", str(work), "tag", "v2", "HEAD~1")
    release_commit = sh("git", "-C", str(work), "rev-parse", "HEAD~1").stdout.strip()
    proc = bed.run(f"{PROMOTE_COMMAND} -e promote_git_tags=true -e promote_git_repo={work}",
                   GIT_COMMITTER_NAME="ci", GIT_COMMITTER_EMAIL="ci@example.invalid")
    assert proc.returncode == 0, tail(proc)
    assert bed.production.live_release() == "v2"
    assert bed.production.records()[-1]["image_digest"] == bed.staging.records()[-1]["image_digest"]
    remote = dict(line.split("\t")[::-1] for line in sh("git", "ls-remote", "--tags", str(origin)).stdout.splitlines())
    assert remote["refs/tags/LIVE^{}"] == release_commit
    deployed = [ref for ref in remote if ref.startswith("refs/tags/DEPLOYED-") and not ref.endswith("^{}")]
    assert len(deployed) == 1 and remote[deployed[0] + "^{}"] == release_commit
    note = sh("git", "-C", str(work), "tag", "-l", "--format=%(contents)", "LIVE").stdout
    assert "release v2" in note and bed.staging.records()[-1]["image_digest"] in note


def test_unknown_tag_fails_at_the_pull_naming_the_image(bed: Bed) -> None:
    containers = bed.staging.web_containers()
    lines = len(bed.staging.records())
    proc = bed.run(DEPLOY_COMMAND, APP_IMAGE_TAG="no-such-tag")
    assert proc.returncode != 0
    assert f"docker pull {REPOSITORY}:no-such-tag failed on staging1" in proc.stdout, tail(proc)
    assert "- staging1: FAILED in pull | live: v2" in proc.stdout
    assert bed.staging.live_release() == "v2"
    assert bed.staging.web_containers() == containers
    assert len(bed.staging.records()) == lines  # the engine never ran


def test_missing_app_image_tag_fails_with_an_example(bed: Bed) -> None:
    proc = bed.run("ansible-playbook playbooks/deploy.yml -i inventories/staging")
    assert proc.returncode != 0
    assert "app_image_tag is required" in proc.stdout
    assert "ansible-playbook playbooks/deploy.yml -i inventories/staging -e app_image_tag=" in proc.stdout


def test_unreachable_server_is_named_and_its_batch_left_alone(bed: Bed) -> None:
    inventory = bed.checkout / "inventories" / "staging-plus-dead"
    shutil.copytree(bed.checkout / "inventories" / "staging", inventory)
    hosts = json.loads((inventory / "hosts.yml").read_text())
    hosts["staging"]["hosts"]["staging2"] = {"ansible_port": free_port(), "ansible_ssh_common_args":
                                             f"-o UserKnownHostsFile={bed.known_hosts} -o StrictHostKeyChecking=yes "
                                             "-o ConnectTimeout=3"}
    (inventory / "hosts.yml").write_text(json.dumps(hosts))
    proc = bed.run(DEPLOY_COMMAND.replace("inventories/staging", "inventories/staging-plus-dead"), APP_IMAGE_TAG="v1")
    assert proc.returncode != 0
    assert "- staging2: UNREACHABLE" in proc.stdout, tail(proc)
    assert "- staging1: SKIPPED | live: v2" in proc.stdout
    assert bed.staging.live_release() == "v2"


def test_a_server_with_an_unknown_host_key_is_refused(bed: Bed) -> None:
    inventory = bed.checkout / "inventories" / "staging-wrong-key"
    shutil.copytree(bed.checkout / "inventories" / "staging", inventory)
    wrong = bed.base / "known_hosts.wrong"
    wrong.write_text(f"[127.0.0.1]:{bed.staging.ssh_port} {bed.production.host_key}\n")
    settings = json.loads((inventory / "group_vars" / "staging" / "vars.yml").read_text())
    settings["ansible_ssh_common_args"] = f"-o UserKnownHostsFile={wrong} -o StrictHostKeyChecking=yes"
    # A fresh connection: a master connection kept from the runs above was verified already.
    settings["ansible_ssh_args"] = "-C -o ControlMaster=no"
    (inventory / "group_vars" / "staging" / "vars.yml").write_text(json.dumps(settings))
    # v2 is live: even if the connection went through, this deploy would change nothing.
    proc = bed.run(DEPLOY_COMMAND.replace("inventories/staging", "inventories/staging-wrong-key"), APP_IMAGE_TAG="v2")
    assert proc.returncode != 0
    assert "- staging1: UNREACHABLE" in proc.stdout, tail(proc)
    assert "host key verification failed" in proc.stdout.lower()
    assert bed.staging.live_release() == "v2"


def test_a_held_deploy_lock_stops_the_deploy_in_preflight(bed: Bed) -> None:
    holder = json.dumps({"pid": 4242, "user": "alice", "host": "staging1", "action": "deploy", "release": "v9",
                         "phase": "health", "since": "2026-01-01T00:00:00Z"})
    bed.staging.exec(f"printf '%s' {shlex.quote(holder)} > /opt/todo/deploy.lock")
    sh("docker", "exec", "-d", bed.staging.name, "sh", "-c",
       "echo $$ > /run/e2e-lock-holder.pid; exec flock --close /opt/todo/deploy.lock sleep 120")
    try:
        deadline = time.monotonic() + 10
        while bed.staging.exec("flock -n /opt/todo/deploy.lock true", check=False).returncode == 0:
            assert time.monotonic() < deadline, "the test could not take the lock"
            time.sleep(0.2)
        proc = bed.run(DEPLOY_COMMAND, APP_IMAGE_TAG="v1")
    finally:
        bed.staging.exec("kill $(cat /run/e2e-lock-holder.pid); printf '{\"released\": true}' > /opt/todo/deploy.lock",
                         check=False)
    assert proc.returncode != 0
    assert "- staging1: FAILED in preflight | live: v2 | wanted: v1" in proc.stdout, tail(proc)
    assert "holds /opt/todo/deploy.lock on staging1: deploy of release v9 by pid 4242 (user alice)" in proc.stdout
    assert bed.staging.live_release() == "v2"


def test_a_wrong_vault_password_stops_before_any_server(bed: Bed) -> None:
    records = len(bed.staging.records())
    proc = bed.run(DEPLOY_COMMAND, APP_IMAGE_TAG="v1", GREENLIGHT_VAULT_PASSWORD_STAGING="not-the-password")
    assert proc.returncode != 0
    assert "decryption failed" in (proc.stdout + proc.stderr).lower(), tail(proc)
    assert "TASK [" not in proc.stdout
    assert bed.staging.live_release() == "v2" and len(bed.staging.records()) == records


def fleet_inventory(bed: Bed, name: str) -> Path:
    """Both servers in one `staging` group (plain vars only: a deploy needs no secret). staging1
    checks health on "/", which even the bad-health image answers, so with the bad-health image
    staging1 passes and production1 fails: one batch, one success, one failure."""
    inventory = bed.checkout / "inventories" / name
    inventory.mkdir(exist_ok=True)
    hosts = {}
    for env, server in (("staging", bed.staging), ("production", bed.production)):
        settings = json.loads((bed.checkout / "inventories" / env / "group_vars" / env / "vars.yml").read_text())
        settings = {k: v for k, v in settings.items() if "{{" not in json.dumps(v)}
        hosts[f"{env}1"] = settings
    hosts["staging1"]["deploy_script_health_path"] = "/"
    (inventory / "hosts.yml").write_text(json.dumps({"staging": {"hosts": hosts}}, indent=2))
    return inventory


def test_fleet_failure_puts_the_batch_back(bed: Bed) -> None:
    staging_before, production_before = bed.staging.live_release(), bed.production.live_release()
    assert staging_before == "v2" and production_before == "v2"
    fleet_inventory(bed, "fleet")
    proc = bed.run(DEPLOY_COMMAND.replace("inventories/staging", "inventories/fleet"), APP_IMAGE_TAG="bad-health")
    assert proc.returncode != 0
    assert "- production1: FAILED in health | live: v2 | wanted: bad-health" in proc.stdout, tail(proc)
    assert "- staging1: REVERTED | live: v2 | wanted: bad-health | previous: v2" in proc.stdout
    assert bed.staging.live_release() == "v2" and bed.production.live_release() == "v2"
    actions = [r["action"] for r in bed.staging.records()[-2:]]
    assert actions == ["deploy", "rollback"]  # staging1 did switch, then went back


def test_fleet_earlier_batches_stay_and_later_ones_do_not_start(bed: Bed) -> None:
    fleet_inventory(bed, "fleet")
    proc = bed.run(DEPLOY_COMMAND.replace("inventories/staging", "inventories/fleet")
                   + " -e greenlight_deploy_serial=1", APP_IMAGE_TAG="bad-health")
    assert proc.returncode != 0
    # Batch 1 (staging1) passed and stays; batch 2 (production1) failed; the summary says both.
    assert "- staging1: DEPLOYED | live: bad-health | previous: v2" in proc.stdout, tail(proc)
    assert "- production1: FAILED in health | live: v2 | wanted: bad-health" in proc.stdout
    assert bed.staging.get("/")[1] == "bad-health"  # its /health answers 500 by design
    assert bed.production.live_release() == "v2"


def test_from_a_teams_app_repository_with_the_built_collection(bed: Bed, tmp_path_factory: pytest.TempPathFactory
                                                               ) -> None:
    """A team's own repository (docs/install.md): a git repository holding only the example app ->
    the BUILT collection tarball installed into its collections/ -> greenlight.deploy.init -> the
    server's address and the test bed's registry filled in -> setup and deploy by FQCN over SSH, host
    key checking on -> the app serves. Nothing of this checkout is used: no ANSIBLE_* variable is
    set, ansible reads the app repository's ansible.cfg (written by init), whose collections path
    holds only the installed copy. Runs last, against production1 (set up by the story above:
    setup here updates a server; run alone, `-k app_repository`, it sets up a fresh one)."""
    server = bed.production
    base = tmp_path_factory.mktemp("app-repository")
    app = base / "todo"
    shutil.copytree(REPO / "examples" / "django-app", app,
                    ignore=shutil.ignore_patterns("wheels", "__pycache__", "*.pyc", "db.sqlite3", "static"))
    git_env = dict(os.environ, GIT_AUTHOR_NAME="dev", GIT_AUTHOR_EMAIL="dev@example.invalid",
                   GIT_COMMITTER_NAME="dev", GIT_COMMITTER_EMAIL="dev@example.invalid")
    sh("git", "init", "-q", str(app))
    sh("git", "-C", str(app), "add", "-A")
    sh("git", "-C", str(app), "commit", "-q", "-m", "the app", env=git_env)

    # The user's shell: the venv's ansible on PATH, nothing else of ours.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "GREENLIGHT_"))}
    env.update(PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", ANSIBLE_NOCOLOR="1", PWD=str(app))
    timings: dict[str, float] = {}

    def run(step: str, *argv: str, **extra: str) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        proc = subprocess.run(list(argv), cwd=app, env=dict(env, **extra), capture_output=True, text=True,
                              check=False)
        timings[step] = round(time.monotonic() - started, 1)
        with bed.log.open("a") as handle:
            handle.write(f"\n$ (app repository) {' '.join(argv)}\n# exit {proc.returncode} after {timings[step]}s\n"
                         f"{proc.stdout[-20000:]}{proc.stderr[-5000:]}\n")
        assert proc.returncode == 0, f"{step}: " + tail(proc)
        return proc

    build = subprocess.run([str(VENV_BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(base)],
                           cwd=REPO, env=ansible_env(), capture_output=True, text=True, check=False)
    assert build.returncode == 0, tail(build)
    tarball, = base.glob("greenlight-deploy-*.tar.gz")
    # Until init has written ansible.cfg, the user names ./collections (docs/install.md); without it
    # ansible-galaxy would skip a version it finds installed elsewhere (~/.ansible/collections).
    # --offline: no Galaxy server here; ansible.posix, the one dependency, comes with the ansible package.
    run("install", "ansible-galaxy", "collection", "install", "--offline", "-p", "collections", str(tarball),
        ANSIBLE_COLLECTIONS_PATH="collections")
    run("init", "ansible-playbook", "greenlight.deploy.init", "-e", "init_ci=github", "-e", "init_staging_host=127.0.0.1",
        "-e", f"init_registry={REGISTRY}", "-e", f"init_image_repository={REPOSITORY}",
        "-e", "init_registry_username=greenlight", ANSIBLE_COLLECTIONS_PATH="collections")
    listing = run("list", "ansible-galaxy", "collection", "list", "greenlight.deploy").stdout
    assert str(app / "collections" / "ansible_collections") in listing and str(REPO) not in listing, listing

    # What the user fills in: how to reach the server (its port, the key, the pinned host key) ...
    hosts_file = app / "deploy" / "inventories" / "staging" / "hosts.yml"
    hosts_text = hosts_file.read_text()
    assert "127.0.0.1:\n" in hosts_text
    hosts_file.write_text(hosts_text.replace("127.0.0.1:\n", (
        "127.0.0.1:\n"
        f"      ansible_port: {server.ssh_port}\n"
        f"      ansible_ssh_private_key_file: {bed.key}\n"
        f"      ansible_ssh_common_args: -o UserKnownHostsFile={bed.known_hosts} -o StrictHostKeyChecking=yes\n")))
    # ... the registry's private CA, a few settings of this test bed ...
    shutil.copy(TESTBED_STATE / "ca" / "ca.crt", app / "deploy" / "registry-ca.crt")
    with (app / "deploy" / "inventories" / "staging" / "group_vars" / "staging" / "vars.yml").open("a") as handle:
        handle.write('registry_login_ca_certificate_file: "{{ inventory_dir }}/../../registry-ca.crt"\n'
                     f"registry_login_check_image: {REPOSITORY}:v1\n"
                     f"deploy_script_public_url: http://127.0.0.1:{server.http_port}/\n"
                     "deploy_script_drain_seconds: 1\ndeploy_script_stop_grace_seconds: 3\n")
    # ... and the registry token, into the vault file init encrypted (ansible-vault reads ansible.cfg).
    vault = "deploy/inventories/staging/group_vars/staging/vault.yml"
    run("decrypt", "ansible-vault", "decrypt", vault)
    text = (app / vault).read_text()
    assert "REPLACE-ME" in text and "vault_django_secret_key: " in text
    (app / vault).write_text(re.sub(r"(?m)^vault_registry_token: .*$", "vault_registry_token: "
                                    + (TESTBED_STATE / "registry-password").read_text().strip(), text))
    run("encrypt", "ansible-vault", "encrypt", "--encrypt-vault-id", "staging", vault)

    syntax = run("syntax", "ansible-playbook", "greenlight.deploy.deploy", "--syntax-check")
    assert f"playbook: {app}/collections/ansible_collections/greenlight/deploy/playbooks/deploy.yml" in syntax.stdout
    run("setup", "ansible-playbook", "greenlight.deploy.setup", "-i", "deploy/inventories/staging")
    deploy = run("deploy", "ansible-playbook", "greenlight.deploy.deploy", "-i", "deploy/inventories/staging",
                 "-e", "app_image_tag=v1")
    assert "- 127.0.0.1: DEPLOYED | live: v1" in deploy.stdout, tail(deploy)
    status, release, body = server.get("/")
    assert (status, release) == (200, "v1") and "To-Do" in body, body[:500]
    assert str(REPO) not in "".join(bed.log.read_text().split("(app repository)")[1:]).replace(str(tarball), "")
    sys.stderr.write(f"\napp repository e2e timings (s): {timings}\n")
