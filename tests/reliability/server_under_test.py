"""The server the reliability suite deploys to, and the tools its tests share.

One test-bed server container per session (systemd + its own Docker engine, like a VM), set up
with playbooks/setup.yml from an inventory written here (vault-encrypted canary secrets), v1
live. Its /var/lib/docker is a small tmpfs, so the disk-full test can fill it. Its nginx is
published on 127.0.0.1 only; Ansible reaches it with `docker exec` (community.docker.docker),
or over SSH (on the greenlight-test network) in the connection-drop test.

Every playbook run goes through :meth:`Server.playbook`, which afterwards records the mode and
owner of the env file and of root's docker config (the registry login) (checked by
test_env_file_and_docker_config_stay_0600_after_every_playbook).
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import secrets
import shlex
import subprocess
import sys
import time
import typing as t
from pathlib import Path

from cmdline_sampler import CmdlineSampler
from gltest import REPO, TESTBED_STATE, ansible_env, free_port

sys.path.insert(0, str(REPO / "bench"))

from loadgen import LoadGenerator  # noqa: E402  (shared with bench/run.py and tests/integration)

__all__ = ["LoadGenerator", "Server", "PlaybookRun", "CmdlineSampler", "new_canary"]

SERVER_IMAGE = "greenlight/server-docker:bookworm"
REGISTRY = "registry.greenlight.test:5000"
REPOSITORY = REGISTRY + "/greenlight/todo"
APP = "todo"
ENV_FILE = "/opt/todo/todo.env"
DOCKER_CONFIG = "/root/.docker/config.json"
LOCK_FILE = "/opt/todo/deploy.lock"
RELEASES_LOG = "/opt/todo/releases.jsonl"
UPSTREAM_FILE = "/etc/nginx/greenlight/todo-upstream.conf"
VAULT_ID = "reliability"
DOCKER_TMPFS_SIZE = "1g"


def new_canary(label: str) -> str:
    """A value that cannot appear anywhere by chance."""
    return "CANARY%s%s" % (label.upper(), secrets.token_hex(12))


@dataclasses.dataclass
class PlaybookRun:
    argv: list[str]
    rc: int
    output: str
    seconds: float
    log_file: t.Optional[Path] = None

    def flat(self) -> str:
        """The output with runs of whitespace collapsed (messages wrap)."""
        return " ".join(self.output.split())

    def failed_task(self) -> t.Optional[str]:
        """Name of the task whose failure stopped the host (the header before the first fatal:)."""
        head = self.output.split("\nfatal:", 1)[0] if "\nfatal:" in self.output else None
        if head is None or "TASK [" not in head:
            return None
        return head.rsplit("TASK [", 1)[1].split("]", 1)[0]

    def recap(self) -> dict[str, dict[str, int]]:
        import re
        found = {}
        for match in re.finditer(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)",
                                 self.output, re.M):
            found[match.group(1)] = {"ok": int(match.group(2)), "changed": int(match.group(3)),
                                     "unreachable": int(match.group(4)), "failed": int(match.group(5))}
        return found


def server_caps() -> list[str]:
    """The capability list of testbed/server-run.sh (one source for how a server container runs)."""
    proc = subprocess.run(["bash", "-c", 'source "$1"; printf "%s\\n" "${GREENLIGHT_SERVER_CAPS[@]}"', "bash",
                           str(REPO / "testbed" / "server-run.sh")], capture_output=True, text=True, check=True)
    return proc.stdout.split()


class Server:
    """One server container under test; see the module docstring."""

    def __init__(self, workdir: Path) -> None:
        self.name = "glrel-" + secrets.token_hex(3)
        self.workdir = workdir
        self.port = free_port()
        self.inventory = workdir / "inventory"
        self.vault_password_file = workdir / "vault-password.txt"
        self.registry_password = (TESTBED_STATE / "registry-password").read_text().strip()
        self.secret_key = new_canary("key")
        # A second secret with quotes and a dollar sign inside: passed on verbatim, never expanded.
        self.email_password_core = new_canary("mail")
        self.email_password = self.email_password_core + "\"q'$HOME"
        self.mode_checks: list[dict[str, t.Any]] = []
        self.canaries_used: list[str] = []
        self._runs = 0

    # -- lifecycle --------------------------------------------------------------------------------
    def write_inventory(self) -> None:
        group_vars = self.inventory / "group_vars" / "staging"
        group_vars.mkdir(parents=True)
        (self.inventory / "hosts.yml").write_text(
            "staging:\n  hosts:\n    %s:\n      ansible_connection: community.docker.docker\n"
            "      ansible_python_interpreter: /usr/bin/python3\n" % self.name)
        (group_vars / "vars.yml").write_text("\n".join([
            "greenlight_app_name: %s" % APP,
            "greenlight_registry: %s" % REGISTRY,
            'greenlight_image_repository: "{{ greenlight_registry }}/greenlight/todo"',
            "app_env_vars:",
            "  DJANGO_ALLOWED_HOST: 127.0.0.1,localhost",
            '  DJANGO_DEBUG_FALSE: "1"',
            "  DJANGO_DB_PATH: /data/db.sqlite3",
            "app_env_secrets:",
            '  DJANGO_SECRET_KEY: "{{ vault_django_secret_key }}"',
            '  EMAIL_HOST_PASSWORD: "{{ vault_email_host_password }}"',
            "registry_login_username: greenlight",
            'registry_login_password: "{{ vault_registry_token }}"',
            "registry_login_ca_certificate_file: %s" % (TESTBED_STATE / "ca" / "ca.crt"),
            'registry_login_check_image: "{{ greenlight_registry }}/greenlight/debian:bookworm-slim"',
            "",
        ]))
        self.vault_password_file.write_text(secrets.token_hex(16) + "\n")
        self.vault_password_file.chmod(0o600)
        self.write_vault(self.secret_key)

    def write_vault(self, secret_key: str) -> None:
        """(Re)write group_vars/staging/vault.yml, encrypted, with this secret key."""
        self.secret_key = secret_key
        self.canaries_used.append(secret_key)
        vault = self.inventory / "group_vars" / "staging" / "vault.yml"
        vault.write_text(json.dumps({"vault_django_secret_key": secret_key,
                                     "vault_email_host_password": self.email_password,
                                     "vault_registry_token": self.registry_password}) + "\n")
        subprocess.run([str(REPO / ".venv" / "bin" / "ansible-vault"), "encrypt", "--vault-id",
                        "%s@%s" % (VAULT_ID, self.vault_password_file), "--encrypt-vault-id", VAULT_ID, str(vault)],
                       check=True, capture_output=True, env=ansible_env())

    def start(self) -> None:
        caps = [arg for cap in server_caps() for arg in ("--cap-add", cap)]
        subprocess.run(
            ["docker", "run", "-d", "--name", self.name, "--hostname", self.name, "--network", "greenlight-test",
             *caps, "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
             "--cgroupns", "host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
             "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp",
             # Small on purpose: test_disk_full_during_pull_fails_clearly_and_old_release_serves fills it.
             "--tmpfs", "/var/lib/docker:size=%s" % DOCKER_TMPFS_SIZE,
             "-p", "127.0.0.1:%d:80" % self.port, SERVER_IMAGE, "/lib/systemd/systemd"],
            check=True, capture_output=True)
        subprocess.run(["bash", "-c", 'source "$1"; server_wait_docker "$2"', "bash",
                        str(REPO / "testbed" / "server-run.sh"), self.name], check=True, capture_output=True)

    def remove(self) -> None:
        subprocess.run(["docker", "rm", "-f", "-v", self.name], capture_output=True, check=False)

    # -- running things ---------------------------------------------------------------------------
    def sh(self, script: str, check: bool = True, user: t.Optional[str] = None,
           timeout: float = 120) -> subprocess.CompletedProcess:
        argv = ["docker", "exec"] + (["-u", user] if user else []) + [self.name, "sh", "-c", script]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError("on %s: %s exited %d:\n%s%s" % (self.name, script, proc.returncode, proc.stdout,
                                                                 proc.stderr))
        return proc

    def playbook_argv(self, playbook: str, *args: str, inventory: t.Optional[Path] = None) -> list[str]:
        return [str(REPO / ".venv" / "bin" / "ansible-playbook"), str(REPO / "playbooks" / playbook),
                "-i", str(inventory or self.inventory), "--vault-id", "%s@%s" % (VAULT_ID, self.vault_password_file),
                *args]

    def playbook_env(self, **extra: str) -> dict[str, str]:
        env = ansible_env(ANSIBLE_NOCOLOR="1", ANSIBLE_PIPELINING="True", GREENLIGHT_DEPLOY_ACTOR="reliability suite",
                          **extra)
        for name in ("ANSIBLE_LOG_PATH", "ANSIBLE_STDOUT_CALLBACK", "ANSIBLE_CONFIG"):
            if name not in extra:
                env.pop(name, None)
        return env

    def playbook(self, playbook: str, *args: str, extra_vars: t.Optional[dict[str, t.Any]] = None,
                 env: t.Optional[dict[str, str]] = None, inventory: t.Optional[Path] = None,
                 timeout: float = 600) -> PlaybookRun:
        """Run a playbook to the end; extra vars go through a file, never argv."""
        return self.start_playbook(playbook, *args, extra_vars=extra_vars, env=env,
                                   inventory=inventory).finish(timeout)

    def start_playbook(self, playbook: str, *args: str, extra_vars: t.Optional[dict[str, t.Any]] = None,
                       env: t.Optional[dict[str, str]] = None,
                       inventory: t.Optional[Path] = None) -> "RunningPlaybook":
        """Start a playbook in the background; RunningPlaybook.finish() waits for its PlaybookRun."""
        self._runs += 1
        argv = self.playbook_argv(playbook, *args, inventory=inventory)
        if extra_vars:
            vars_file = self.workdir / ("vars-%03d.json" % self._runs)
            vars_file.write_text(json.dumps(extra_vars))
            argv += ["-e", "@%s" % vars_file]
        name = Path(playbook).name
        log_file = self.workdir / ("run-%03d-%s.log" % (self._runs, name))
        return RunningPlaybook(self, argv, log_file, " ".join([name, *args]), self.playbook_env(**(env or {})))

    def deploy(self, release: str, *args: str, **kwargs: t.Any) -> PlaybookRun:
        extra = dict(kwargs.pop("extra_vars", None) or {}, app_image_tag=release)
        return self.playbook("deploy.yml", *args, extra_vars=extra, **kwargs)

    def record_modes(self, what: str, rc: int) -> None:
        stat = self.sh("stat -c '%%n %%a %%U' %s %s" % (ENV_FILE, DOCKER_CONFIG), check=False).stdout
        self.mode_checks.append({"run": what, "rc": rc, "stat": stat.strip().splitlines()})

    # -- state ------------------------------------------------------------------------------------
    def get(self, path: str = "/health", timeout: float = 15) -> tuple[int, t.Optional[str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.getheader("X-Release"), response.read()
        finally:
            conn.close()

    def live_release(self) -> t.Optional[str]:
        """The release nginx sends traffic to, as answered through it (None unless a 200)."""
        try:
            status, release, _body = self.get("/health")
        except OSError:
            return None
        return release if status == 200 else None

    def wait_release(self, release: str, consecutive: int = 10, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        good = 0
        while good < consecutive:
            if time.monotonic() > deadline:
                raise AssertionError("nginx on %s never settled on release %s (now %s)"
                                     % (self.name, release, self.live_release()))
            good = good + 1 if self.live_release() == release else 0
            time.sleep(0.05)

    def other_release(self) -> str:
        return "v1" if self.live_release() == "v2" else "v2"

    def containers(self) -> list[dict[str, t.Any]]:
        """Every container of the app (running or not): id, name, release, service, state."""
        out = self.sh("docker ps -a --no-trunc --filter label=greenlight.app=%s --format '{{json .}}'" % APP).stdout
        found = []
        for line in out.splitlines():
            item = json.loads(line)
            labels = dict(part.split("=", 1) for part in item.get("Labels", "").split(",") if "=" in part)
            found.append({"id": item["ID"], "name": item["Names"], "state": item["State"],
                          "release": labels.get("greenlight.release"), "service": labels.get("greenlight.service")})
        return sorted(found, key=lambda c: c["name"])

    def running_web(self) -> list[dict[str, t.Any]]:
        return [c for c in self.containers() if c["service"] == "web" and c["state"] == "running"]

    def lock_is_free(self) -> bool:
        return self.sh("flock --nonblock %s true" % LOCK_FILE, check=False).returncode == 0

    def lock_holder(self) -> t.Optional[dict[str, t.Any]]:
        out = self.sh("cat %s 2>/dev/null || true" % LOCK_FILE, check=False).stdout
        try:
            return json.loads(out) if out.strip() else None
        except ValueError:
            return None

    def wait_for_phase(self, phases: t.Sequence[str], timeout: float = 120) -> dict[str, t.Any]:
        """Poll the deploy lock file until a running deploy shows one of `phases`."""
        deadline = time.monotonic() + timeout
        holder = None
        while time.monotonic() < deadline:
            holder = self.lock_holder()
            if holder and holder.get("phase") in phases and not holder.get("released"):
                return holder
            time.sleep(0.05)
        raise AssertionError("no deploy reached phase %s on %s (last lock content: %s)" % (phases, self.name, holder))

    def audit_lines(self) -> list[dict[str, t.Any]]:
        out = self.sh("cat %s 2>/dev/null || true" % RELEASES_LOG).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def file_digest(self, path: str) -> str:
        return self.sh("sha256sum %s" % path).stdout.split()[0]

    def forbidden(self) -> list[str]:
        """Every secret of the session in the forms it could leak in (plain, docker's base64 auth)."""
        values = list(self.canaries_used) + [self.email_password_core, self.registry_password]
        values.append(base64.b64encode(("greenlight:%s" % self.registry_password).encode()).decode())
        return values

    def leaked(self, text: str) -> list[str]:
        return [value for value in self.forbidden() if value in text]


class RunningPlaybook:
    """An ansible-playbook started in the background (output to a log file)."""

    def __init__(self, server: Server, argv: list[str], log_file: Path, what: str, env: dict[str, str]) -> None:
        self.server = server
        self.argv = argv
        self.log_file = log_file
        self.what = what
        self._handle = open(log_file, "w")
        self._handle.write("$ %s\n" % shlex.join(argv))
        self._handle.flush()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, stdout=self._handle, stderr=subprocess.STDOUT, text=True,
                                     env=env, cwd=str(REPO))

    def finish(self, timeout: float = 600) -> PlaybookRun:
        try:
            rc = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._handle.close()
        output = self.log_file.read_text().split("\n", 1)[1]
        self.server.record_modes(self.what, rc)
        return PlaybookRun(self.argv, rc, output, time.monotonic() - self.started, self.log_file)
