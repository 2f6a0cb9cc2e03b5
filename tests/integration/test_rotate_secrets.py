"""playbooks/rotate_secrets.yml end to end against a real server.

The bed: a test-bed server container (systemd + its own Docker engine) set up with setup.yml and
serving v1 through deploy.yml, reached from here through its nginx on a 127.0.0.1 port; a copy of
the example staging inventory in a tmp dir (the rotation rewrites its vault file), and an account
of its own at the test registry (htpasswd entry), so a registry token can really be replaced.
The bed is made once per test session and shared with test_vault_rekey.py (setup + deploy are the
slow part); the tests here run in file order and each states what it expects to find.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import secrets
import shlex
import shutil
import ssl
import subprocess
import tempfile
import time
import types
import typing as t
from pathlib import Path

import pytest
import yaml

import prewarm  # tests/prewarm.py
from gltest import REPO, TESTBED_STATE, VENV_BIN, ansible_env

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REGISTRY = "registry.greenlight.test:5000"
REGISTRY_HOST_PORT = int(os.environ.get("GREENLIGHT_REGISTRY_PORT", "5443"))
SERVER_IMAGE = "greenlight/server-docker:bookworm"
EXAMPLE = REPO / "inventories" / "example" / "staging"
EXAMPLE_PASSWORD = REPO / "inventories" / "example" / "EXAMPLE-VAULT-PASSWORD-DO-NOT-USE.txt"
HTPASSWD = TESTBED_STATE / "registry" / "htpasswd"
KEY = "vault_django_secret_key"
FALLBACKS = "vault_django_secret_key_fallbacks"
TOKEN = "vault_registry_token"
MARKER = "vault_greenlight_rotation_pending"

HOSTS = """\
---
staging:
  hosts:
    {name}:
      ansible_connection: community.docker.docker
      ansible_python_interpreter: /usr/bin/python3
"""

# The example's settings, pointed at the test bed (registry, its CA, this bed's registry account).
VARS = """\
---
greenlight_app_name: todo
greenlight_registry: {registry}
greenlight_image_repository: "{{{{ greenlight_registry }}}}/greenlight/todo"

app_env_vars:
  DJANGO_ALLOWED_HOST: 127.0.0.1,localhost
  DJANGO_DEBUG_FALSE: "1"
  DJANGO_DB_PATH: /data/db.sqlite3
app_env_secrets:
  DJANGO_SECRET_KEY: "{{{{ vault_django_secret_key }}}}"
  DJANGO_SECRET_KEY_FALLBACKS: "{{{{ vault_django_secret_key_fallbacks | default('') }}}}"
  EMAIL_HOST_PASSWORD: "{{{{ vault_email_host_password }}}}"

registry_login_username: {user}
registry_login_password: "{{{{ vault_registry_token }}}}"
registry_login_ca_certificate_file: {ca}

# Shorter waits than production: the tests watch every request anyway.
deploy_script_drain_seconds: 1
deploy_script_health_interval: 0.3
"""

# Test-only callback: SIGKILL ansible-playbook the moment the play named in GLTEST_KILL_AT_PLAY
# starts -- an operator's Ctrl-C or a CI runner dying at that point. No hook in the product.
KILL_CALLBACK = '''\
from __future__ import annotations

import os
import signal

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "kill_at_play"
    CALLBACK_NEEDS_ENABLED = True

    def v2_playbook_on_play_start(self, play):
        if play.get_name().startswith(os.environ["GLTEST_KILL_AT_PLAY"]):
            os.kill(os.getpid(), signal.SIGKILL)
'''

# Test-only callback: SIGKILL ansible-playbook as soon as a task whose name starts with
# GLTEST_KILL_AFTER_TASK has a result (the controller dies before the task after it starts).
KILL_AFTER_TASK_CALLBACK = '''\
from __future__ import annotations

import os
import signal

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "kill_after_task"
    CALLBACK_NEEDS_ENABLED = True

    def _kill_after(self, result):
        if result._task.name.startswith(os.environ["GLTEST_KILL_AFTER_TASK"]):  # the name without its role
            os.kill(os.getpid(), signal.SIGKILL)

    def v2_runner_on_ok(self, result):
        self._kill_after(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._kill_after(result)
'''

def integration_helpers(config: pytest.Config) -> types.ModuleType:
    """tests/integration/conftest.py (LoadGenerator, free_ports) as pytest loaded it; docs/contracts.md
    rules out `from conftest import`, since several conftest.py files share that module name."""
    wanted = Path(__file__).resolve().with_name("conftest.py")
    for plugin in config.pluginmanager.get_plugins():
        if isinstance(plugin, types.ModuleType) and plugin.__file__ and Path(plugin.__file__).resolve() == wanted:
            return plugin
    raise RuntimeError("tests/integration/conftest.py is not loaded")


def new_token(label: str) -> str:
    return "%s-%s" % (label, secrets.token_urlsafe(18).replace("-", "x").replace("_", "y"))


class Browser:
    """One user's cookie jar; every request goes through the server's nginx."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookie: t.Optional[str] = None

    def session_count(self) -> int:
        """GET /session/ (a counter kept in the signed-cookie session) and return the count."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        try:
            connection.request("GET", "/session/", headers={"Cookie": self.cookie} if self.cookie else {})
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        assert response.status == 200, (response.status, body[:300])
        cookie = response.getheader("Set-Cookie")
        if cookie:
            self.cookie = cookie.split(";", 1)[0]
        return json.loads(body)["count"]


class RotationBed:
    """A set-up server serving v1, its inventory copy, and its registry account."""

    def __init__(self, base: Path, helpers: types.ModuleType) -> None:
        self.base = base
        self.helpers = helpers
        self.name = "glrot-" + secrets.token_hex(3)
        self.port = helpers.free_ports(1)[0]
        self.inventory = base / "inventory"
        self.vault = self.inventory / "group_vars" / "staging" / "vault.yml"
        self.password_file = base / "vault-password"
        self.registry_user = self.name
        # Every value that must never show up in output (canaries), whatever test made it.
        self.secret_values: set[str] = set()
        self.timings: dict[str, float] = {}

    # -- lifecycle ------------------------------------------------------------------------------
    def create(self) -> None:
        shutil.copytree(EXAMPLE, self.inventory)
        shutil.copy(EXAMPLE_PASSWORD, self.password_file)
        (self.inventory / "hosts.yml").write_text(HOSTS.format(name=self.name))
        (self.inventory / "group_vars" / "staging" / "vars.yml").write_text(
            VARS.format(registry=REGISTRY, user=self.registry_user, ca=TESTBED_STATE / "ca" / "ca.crt"))
        token = new_token("first")
        self.registry_accepts(token)
        self.set_vault_value_with_ansible_vault(TOKEN, token)
        self.remember_secrets()

        started = time.monotonic()
        subprocess.run(["bash", "-c", 'source "$1" && server_run "$2" "$3" -p "127.0.0.1:$4:80" && server_wait_docker "$2"',
                        "bash", str(REPO / "testbed" / "server-run.sh"), self.name, SERVER_IMAGE, str(self.port)],
                       check=True, capture_output=True, text=True, timeout=180)
        setup = self.playbook("setup.yml", "-e", "greenlight_setup_hosts=staging")
        assert setup.returncode == 0, setup.stdout[-4000:] + setup.stderr[-2000:]
        self.timings["setup"] = time.monotonic() - started
        started = time.monotonic()
        deploy = self.playbook("deploy.yml", "-e", "app_image_tag=v1")
        assert deploy.returncode == 0, deploy.stdout[-4000:] + deploy.stderr[-2000:]
        self.timings["deploy v1"] = time.monotonic() - started

    def remove(self) -> None:
        subprocess.run(["docker", "rm", "-f", "-v", self.name], capture_output=True, check=False)
        subprocess.run(["docker", "volume", "rm", "-f", self.name + "-docker"], capture_output=True, check=False)
        self._write_htpasswd_entry(None)
        shutil.rmtree(self.base, ignore_errors=True)

    # -- ansible ---------------------------------------------------------------------------------
    def playbook(self, playbook: str, *args: str, password_file: t.Optional[Path] = None, vault_id: str = "staging",
                 inventory: t.Optional[Path] = None, env: t.Optional[dict[str, str]] = None,
                 timeout: float = 900) -> subprocess.CompletedProcess[str]:
        argv = [str(VENV_BIN / "ansible-playbook"), "playbooks/%s" % playbook, "-i", str(inventory or self.inventory),
                "--vault-id", "%s@%s" % (vault_id, password_file or self.password_file), *args]
        return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL,
                              env=ansible_env(**{"ANSIBLE_PIPELINING": "True", "ANSIBLE_NOCOLOR": "1", **(env or {})}))

    def rotate(self, *args: str, **kwargs: t.Any) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        proc = self.playbook("rotate_secrets.yml", *args, **kwargs)
        self.timings.setdefault("rotations", 0.0)
        self.timings["rotations"] += time.monotonic() - started
        return proc

    def vault_text(self, path: t.Optional[Path] = None, password_file: t.Optional[Path] = None,
                   vault_id: str = "staging") -> str:
        proc = subprocess.run([str(VENV_BIN / "ansible-vault"), "view", "--vault-id",
                               "%s@%s" % (vault_id, password_file or self.password_file), str(path or self.vault)],
                              capture_output=True, text=True, check=True, env=ansible_env())
        return proc.stdout

    def vault_values(self) -> dict[str, t.Any]:
        return yaml.safe_load(self.vault_text())

    def set_vault_value_with_ansible_vault(self, name: str, value: str) -> None:
        """Test setup through ansible-vault itself (not the plugin under test)."""
        text = self.vault_text()
        text, count = re.subn(r"(?m)^%s:.*$" % name, "%s: %s" % (name, json.dumps(value)), text)
        assert count == 1
        subprocess.run([str(VENV_BIN / "ansible-vault"), "encrypt", "--vault-id", "staging@%s" % self.password_file,
                        "--encrypt-vault-id", "staging", "--output", str(self.vault), "-"],
                       input=text, capture_output=True, text=True, check=True, env=ansible_env())

    def remember_secrets(self) -> None:
        for name, value in self.vault_values().items():
            if name.startswith("vault_") and name != MARKER and isinstance(value, str):
                for part in value.split(","):
                    if len(part) >= 12:
                        self.secret_values.add(part)
                if name == TOKEN:
                    self.secret_values.add(self.auth(value))

    def auth(self, token: str) -> str:
        """What docker stores in config.json for this bed's account and `token`."""
        return base64.b64encode(("%s:%s" % (self.registry_user, token)).encode()).decode()

    def leaked(self, text: str) -> list[str]:
        return sorted(value[:6] + "..." for value in self.secret_values if value in text)

    # -- the server ------------------------------------------------------------------------------
    def sh(self, command: str) -> str:
        return subprocess.run(["docker", "exec", self.name, "sh", "-c", command], capture_output=True, text=True,
                              check=True, timeout=60).stdout

    def env_file(self) -> dict[str, str]:
        lines = self.sh("cat /opt/todo/todo.env").splitlines()
        return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))

    def env_file_sha(self) -> str:
        return hashlib.sha256(self.sh("cat /opt/todo/todo.env").encode()).hexdigest()

    def releases(self) -> list[dict[str, t.Any]]:
        return [json.loads(line) for line in self.sh("cat /opt/todo/releases.jsonl").splitlines() if line.strip()]

    def live_container(self) -> str:
        return self.sh("docker ps -q --no-trunc --filter label=greenlight.app=todo --filter label=greenlight.service=web")

    def stored_auth(self) -> str:
        config = json.loads(self.sh("cat /root/.docker/config.json"))
        return config["auths"][REGISTRY]["auth"]

    # -- the registry account --------------------------------------------------------------------
    def registry_accepts(self, token: str) -> None:
        """The registry accepts `token` (and no other) for this bed's account, like a newly created
        access token after the old one was revoked."""
        entry = subprocess.run(["docker", "run", "--rm", "-i", "greenlight/registry:bookworm", "htpasswd", "-niB",
                                self.registry_user], input=token, capture_output=True, text=True, check=True).stdout
        self._write_htpasswd_entry(entry.strip())
        self.secret_values.update({token, self.auth(token)})
        # The registry re-reads htpasswd when it changes; wait until it takes the new token.
        deadline = time.monotonic() + 20
        while self.registry_status(token) != 200:
            assert time.monotonic() < deadline, "the test registry did not accept the new htpasswd entry"
            time.sleep(0.2)

    def registry_status(self, token: str) -> int:
        context = ssl.create_default_context(cafile=str(TESTBED_STATE / "ca" / "ca.crt"))
        connection = http.client.HTTPSConnection("127.0.0.1", REGISTRY_HOST_PORT, context=context, timeout=10)
        try:
            connection.request("GET", "/v2/", headers={"Authorization": "Basic " + base64.b64encode(
                ("%s:%s" % (self.registry_user, token)).encode()).decode()})
            return connection.getresponse().status
        finally:
            connection.close()

    def _write_htpasswd_entry(self, entry: t.Optional[str]) -> None:
        """Replace this bed's line in the test bed's htpasswd (atomically; other accounts untouched)."""
        text = HTPASSWD.read_text()
        kept = "".join(line for line in text.splitlines(keepends=True)
                       if not line.startswith(self.registry_user + ":"))
        if entry:
            kept = kept + ("" if kept.endswith("\n") or not kept else "\n") + entry + "\n"
        temporary = HTPASSWD.with_name(".htpasswd.%s" % self.name)
        temporary.write_text(kept)
        os.chmod(temporary, HTPASSWD.stat().st_mode & 0o777)
        temporary.replace(HTPASSWD)


_BED: dict[str, t.Any] = {}
PREWARM = "rotation-bed"


def new_bed(config: pytest.Config, job: t.Optional[prewarm.Job] = None) -> RotationBed:
    """A created RotationBed; removed again when its creation fails."""
    bed = RotationBed(Path(tempfile.mkdtemp(prefix="glrot-")), integration_helpers(config))
    if job is not None:
        job.abort = bed.remove
        if job.cancelled:
            raise RuntimeError("cancelled")
    try:
        bed.create()
    except BaseException:
        bed.remove()
        raise
    return bed


def start_shared_bed(config: pytest.Config, first_needed: int = 0) -> None:
    """Create the session's bed in the background (tests/integration/conftest.py calls this once
    collection is done; shared_bed takes it)."""
    prewarm.register(PREWARM, lambda job: new_bed(config, job), cleanup=RotationBed.remove,
                     first_needed=first_needed)


def shared_bed(request: pytest.FixtureRequest) -> RotationBed:
    """The session's RotationBed, made on first use (or taken from the background setup) and
    removed when pytest ends."""
    if "error" in _BED:
        pytest.fail("setting up the rotation test bed failed earlier: %s" % _BED["error"])
    if "bed" not in _BED:
        started = prewarm.take(PREWARM)
        try:
            bed = started.result() if started else new_bed(request.config)
        except BaseException as exc:
            _BED["error"] = str(exc)[-3000:]
            raise
        request.config.add_cleanup(bed.remove)
        _BED["bed"] = bed
    return _BED["bed"]


@pytest.fixture(scope="module")
def bed(request: pytest.FixtureRequest) -> RotationBed:
    return shared_bed(request)


def assert_only_rotated_lines_differ(before: str, after: str, rotated: set[str]) -> None:
    """Line by line: every line of `before` is still there at its place, except the values of the
    rotated keys; lines added at the end are rotated keys (the first fallbacks entry)."""
    old, new = before.splitlines(), after.splitlines()
    assert len(new) >= len(old)
    for index, (a, b) in enumerate(zip(old, new)):
        if a != b:
            name = a.split(":", 1)[0]
            assert name in rotated and b.split(":", 1)[0] == name, "line %d changed: %s -> %s" % (
                index + 1, a.split(":", 1)[0], b.split(":", 1)[0])
    for line in new[len(old):]:
        assert line.split(":", 1)[0] in rotated, "unexpected new line for %s" % line.split(":", 1)[0]


def output(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------------------
def test_rotation_keeps_sessions_drops_no_request_and_prints_no_secret(bed: RotationBed, tmp_path: Path,
                                                                       request: pytest.FixtureRequest) -> None:
    helpers = bed.helpers
    browser = Browser(bed.port)
    assert [browser.session_count(), browser.session_count()] == [1, 2]
    before = bed.vault_text()
    header = bed.vault.read_bytes().splitlines()[0]
    old = yaml.safe_load(before)
    deployed = bed.releases()[-1]

    # A new registry token, made in the registry's UI: from now on only it works there.
    token = new_token("second")
    bed.registry_accepts(token)
    token_file = tmp_path / "new-registry-token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)

    load = helpers.LoadGenerator(bed.port, threads=4, paths=("/health", "/"), pause=0.01, max_requests=10 ** 6,
                                 max_seconds=900).start()
    started = time.monotonic()
    proc = bed.rotate("-e", "rotate=django_secret_key,registry_token", "-e", "new_registry_token_file=%s" % token_file,
                      "-vvvv", "--diff")
    ended = time.monotonic()
    load.stop()
    bed.remember_secrets()
    assert proc.returncode == 0, output(proc)[-5000:]

    summary = load.summary()
    assert summary["failed"] == 0, summary
    assert summary["requests"] > 50, summary
    done = [result[0] for result in load.results]
    assert min(done) < started + 5 and max(done) > ended - 5, "the request stream did not cover the whole rotation"
    # Two restarts (accept round, switch round), both zero-downtime config changes of v1.
    accept, switch = bed.releases()[-2:]
    assert accept["action"] == switch["action"] == "config-change" and "accept step" in accept["actor"]["by"]
    assert browser.session_count() == 3, "the session signed with the previous key was not accepted"

    # The vault: new key, the previous one as the only fallback, the new token, no marker; every
    # other line (comments, order, the other secrets) as it was, same vault id.
    after = bed.vault_text()
    assert bed.vault.read_bytes().splitlines()[0] == header == b"$ANSIBLE_VAULT;1.2;AES256;staging"
    assert_only_rotated_lines_differ(before, after, {KEY, FALLBACKS, TOKEN})
    new = yaml.safe_load(after)
    assert new[KEY] != old[KEY] and len(new[KEY]) >= 50
    assert new[FALLBACKS] == old[KEY]
    assert new[TOKEN] == token
    assert MARKER not in new
    assert {name: value for name, value in new.items() if name not in (KEY, FALLBACKS, TOKEN)} == \
        {name: value for name, value in old.items() if name not in (KEY, FALLBACKS, TOKEN)}

    # The server: env file = vault; the old key only as the single fallback.
    env = bed.env_file()
    assert env["DJANGO_SECRET_KEY"] == new[KEY]
    assert env["DJANGO_SECRET_KEY_FALLBACKS"] == old[KEY]
    assert env["EMAIL_HOST_PASSWORD"] == old["vault_email_host_password"]
    # Restarted through the swap with the same image: a config change.
    record = bed.releases()[-1]
    assert record["action"] == "config-change" and record["result"] == "ok", record
    assert (record["release"], record["image_id"]) == (deployed["release"], deployed["image_id"])
    # The deploy user is logged in with the new token, and a pull with it worked.
    assert bed.stored_auth() == bed.auth(token)
    assert "registry pulled %s/greenlight/todo@sha256:" % REGISTRY in proc.stdout

    # Canary: no secret value -- old or new key, old or new token, docker's base64 of them, the
    # other vault values -- in the output at -vvvv with --diff. Controls: the output is that verbose
    # and has diffs, and the values are real (they are in the env file / config.json checked above).
    text = output(proc)
    assert "<%s> ESTABLISH DOCKER CONNECTION" % bed.name in text
    assert "--- before" in text and "vault_greenlight_rotation_pending: (value hidden, removed)" in text
    assert bed.leaked(text) == []
    request.node.user_properties.append(("load", summary))


def test_an_interrupted_rotation_is_finished_by_running_it_again(bed: RotationBed, tmp_path: Path) -> None:
    """The run is killed right after the vault rewrite, the re-run is killed after the server
    accepts the new key (the accept round), and the third run finishes: one new key throughout,
    sessions valid at every point."""
    if FALLBACKS not in bed.vault_values():  # run on its own: make "the previous rotation" first
        assert bed.rotate("-e", "rotate=django_secret_key").returncode == 0
    browser = Browser(bed.port)
    assert [browser.session_count(), browser.session_count()] == [1, 2]
    before = bed.vault_values()
    previous_fallback = before[FALLBACKS]
    live = bed.live_container()
    env_before = bed.env_file_sha()
    callbacks = tmp_path / "callbacks"
    callbacks.mkdir()
    (callbacks / "kill_at_play.py").write_text(KILL_CALLBACK)
    args = ("-e", "rotate=django_secret_key")
    runs = []

    def rotate_killed_at(play: str) -> subprocess.CompletedProcess[str]:
        killed = bed.rotate(*args, env={"ANSIBLE_CALLBACK_PLUGINS": str(callbacks),
                                        "ANSIBLE_CALLBACKS_ENABLED": "kill_at_play", "GLTEST_KILL_AT_PLAY": play})
        runs.append(killed)
        bed.remember_secrets()
        assert killed.returncode == -9, output(killed)[-3000:]
        return killed

    # 1. Killed between the vault rewrite and the first server change.
    rotate_killed_at("Rotate | Let every server accept")
    written = bed.vault_values()
    assert written[MARKER] == "django_secret_key"
    assert written[KEY] != before[KEY] and written[FALLBACKS] == before[KEY]
    assert bed.env_file_sha() == env_before and bed.live_container() == live
    vault_bytes = bed.vault.read_bytes()

    # 2. Re-run, killed once the server accepts the new key: the old key still signs.
    again = rotate_killed_at("Rotate | Put the new secrets")
    assert "Finishing the rotation of django_secret_key" in again.stdout
    assert bed.vault.read_bytes() == vault_bytes, "the re-run made new values"
    env = bed.env_file()
    assert (env["DJANGO_SECRET_KEY"], env["DJANGO_SECRET_KEY_FALLBACKS"]) == (before[KEY], written[KEY])
    record = bed.releases()[-1]
    assert record["action"] == "config-change" and "accept step" in record["actor"]["by"], record
    assert browser.session_count() == 3

    # 3. The third run finishes.
    finished = bed.rotate(*args)
    runs.append(finished)
    assert finished.returncode == 0, output(finished)[-5000:]
    after = bed.vault_values()
    # The key the first, killed run made -- not a second one -- and the previous key as fallback.
    assert after[KEY] == written[KEY]
    assert after[FALLBACKS] == before[KEY]
    assert MARKER not in after
    env = bed.env_file()
    assert (env["DJANGO_SECRET_KEY"], env["DJANGO_SECRET_KEY_FALLBACKS"]) == (after[KEY], before[KEY])
    assert bed.releases()[-1]["action"] == "config-change"
    assert browser.session_count() == 4
    # The fallback of the previous rotation is gone entirely after this one.
    assert previous_fallback not in bed.vault_text()
    assert previous_fallback not in bed.sh("cat /opt/todo/todo.env")
    assert bed.leaked("".join(output(run) for run in runs)) == []


def files_holding(roots: t.Iterable[Path], needles: set[str], since: float = 0.0,
                 exclude: t.Iterable[Path] = ()) -> list[str]:
    """Regular files under `roots` (changed at or after `since`) that contain one of `needles`."""
    excluded = {path.resolve() for path in exclude}
    found = []
    for root in roots:
        for directory, _dirs, files in os.walk(root):
            for name in files:
                path = Path(directory, name)
                try:
                    info = path.lstat()
                    if not path.is_file() or path.is_symlink() or info.st_size > 5 * 2 ** 20 \
                            or info.st_mtime < since or path.resolve() in excluded:
                        continue
                    data = path.read_bytes()
                except OSError:
                    continue
                if any(needle.encode() in data for needle in needles):
                    found.append(str(path))
    return sorted(found)


def test_a_controller_killed_after_the_token_check_leaves_no_token_on_disk(bed: RotationBed, tmp_path: Path) -> None:
    """kill -9 of ansible-playbook right after the new registry token was proved on the server and
    before anything else ran (with pipelining off, the users' default): the token is nowhere on
    disk, on the server or on the controller, except the file the operator gave it in. Running
    the same command again then rotates the token."""
    token = new_token("killed")
    bed.registry_accepts(token)  # the registry's new token; the old one is revoked
    token_file = tmp_path / "new-registry-token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    needles = {token, bed.auth(token)}
    callbacks = tmp_path / "callbacks"
    callbacks.mkdir()
    (callbacks / "kill_after_task.py").write_text(KILL_AFTER_TASK_CALLBACK)
    local_temp = tmp_path / "ansible-local"
    local_temp.mkdir()
    vault_before = bed.vault.read_bytes()
    args = ("-e", "rotate=registry_token", "-e", "new_registry_token_file=%s" % token_file)
    started = time.time()
    killed = bed.rotate(*args, env={"ANSIBLE_PIPELINING": "False", "ANSIBLE_LOCAL_TEMP": str(local_temp),
                                    "ANSIBLE_CALLBACK_PLUGINS": str(callbacks),
                                    "ANSIBLE_CALLBACKS_ENABLED": "kill_after_task",
                                    "GLTEST_KILL_AFTER_TASK": "Registry token | Log in with the new token"})
    assert killed.returncode == -9, output(killed)[-3000:]
    assert re.search(r"TASK \[(?:greenlight\.deploy\.release : )?Registry token \| Log in with the new token on %s\]"
                     % re.escape(bed.name), killed.stdout), output(killed)[-3000:]
    assert bed.vault.read_bytes() == vault_before, "the killed run got as far as the vault"

    # The server: anywhere a process of the rotation could write, root's 0600 Docker
    # client configuration aside (it still holds the previous token).
    time.sleep(1)  # a module process the kill orphaned on the server finishes
    pattern = " ".join("-e %s" % shlex.quote(needle) for needle in sorted(needles))
    on_server = bed.sh("grep -rlsF -D skip %s /tmp /var/tmp /root /home /run /etc /opt /srv /var/www 2>/dev/null "
                       "| grep -vx /root/.docker/config.json || true" % pattern).split()
    assert on_server == [], on_server
    # The controller: Ansible's temp directories and every file changed in the temp dir since the
    # run started, except the operator's own token file.
    roots = [local_temp, Path.home() / ".ansible", Path(tempfile.gettempdir())]
    on_controller = files_holding(roots, needles, since=started - 1, exclude=[token_file])
    assert on_controller == [], on_controller
    assert bed.leaked(output(killed)) == []

    # The same command again: the token is rotated, the deploy user pulls with it.
    finished = bed.rotate(*args)
    assert finished.returncode == 0, output(finished)[-5000:]
    assert bed.vault_values()[TOKEN] == token and bed.stored_auth() == bed.auth(token)
    bed.remember_secrets()
    assert bed.leaked(output(finished)) == []


@pytest.mark.parametrize("case", ["unknown-name", "token-on-command-line", "no-token-and-no-terminal", "wrong-vault-password",
                                  "token-rejected"])
def test_bad_input_fails_before_anything_is_written(bed: RotationBed, tmp_path: Path, case: str) -> None:
    vault_before = (bed.vault.read_bytes(), bed.vault.stat().st_mtime_ns)
    env_before = bed.env_file_sha()
    auth_before = bed.stored_auth()
    args: list[str] = []
    kwargs: dict[str, t.Any] = {}
    if case == "unknown-name":
        args = ["-e", "rotate=django_secret_key,ssh_host_key"]
        expected = ["Unknown secret name(s): ssh_host_key.",
                    "Known names: django_secret_key (vault variable vault_django_secret_key, generated),",
                    "registry_token (vault variable vault_registry_token, supplied)"]
    elif case == "token-on-command-line":
        args = ["-e", "rotate=registry_token", "-e", "new_registry_token=typed-on-the-command-line"]
        expected = ["new_registry_token must not be given on the command line", "-e new_registry_token_file=<path>"]
    elif case == "no-token-and-no-terminal":
        args = ["-e", "rotate=registry_token"]  # stdin is /dev/null: the hidden prompt gets nothing
        expected = ["The new registry token (typed at the prompt) is empty",
                    "(without a terminal, pass -e new_registry_token_file=<path>)"]
    elif case == "wrong-vault-password":
        wrong = tmp_path / "wrong-password"
        wrong.write_text("not-the-password\n")
        args = ["-e", "rotate=django_secret_key"]
        kwargs = {"password_file": wrong}
        expected = ["Decryption failed"]
    else:
        rejected = tmp_path / "token"
        rejected.write_text(new_token("never-created") + "\n")
        bed.secret_values.add(rejected.read_text().strip())
        args = ["-e", "rotate=registry_token", "-e", "new_registry_token_file=%s" % rejected]
        expected = ["The registry %s rejected the new token for %s" % (REGISTRY, bed.registry_user),
                    "The vault file was not changed and the servers keep the current token."]

    proc = bed.rotate(*args, **kwargs)
    text = output(proc)
    assert proc.returncode != 0
    flat = " ".join(text.split())
    for message in expected:
        assert message in flat, flat[-3000:]
    assert "PLAY [Rotate | Put the new secrets" not in proc.stdout
    assert (bed.vault.read_bytes(), bed.vault.stat().st_mtime_ns) == vault_before
    assert bed.env_file_sha() == env_before and bed.stored_auth() == auth_before
    assert bed.sh("ls -d /tmp/greenlight-rotate-* 2>/dev/null || true").strip() == ""
    assert bed.leaked(text) == []
