"""Shared fixtures for integration tests against the real Docker engine and a private nginx.

Everything listens on 127.0.0.1 only. Each test gets its own app name (prefix ``gltest``), its own
nginx instance (prefix, config, pid and upstream include file in a tmp dir) and its own pair of
free host ports; containers labelled ``greenlight.app=<app>`` are removed afterwards.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import typing as t
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / ".collections"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
APP_IMAGE = os.environ.get("GREENLIGHT_TEST_IMAGE", "greenlight/todo")
APP_UID = 10001


def _ensure_collection_path() -> None:
    link = COLLECTIONS / "ansible_collections" / "greenlight" / "deploy"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(REPO)
    if str(COLLECTIONS) not in sys.path:
        sys.path.insert(0, str(COLLECTIONS))


_ensure_collection_path()

from ansible_collections.greenlight.deploy.plugins.module_utils._engine import docker_api  # noqa: E402


def docker_client() -> docker_api.DockerClient:
    return docker_api.DockerClient(docker_api.socket_path_from_env())


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the rotation test bed (test_rotate_secrets.py, shared with test_vault_rekey.py) in
    the background once collection is done, when one of its tests is selected (tests/prewarm.py)."""
    import prewarm  # noqa: PLC0415

    if session.config.option.collectonly or not prewarm.enabled():
        return
    for index, item in enumerate(session.items):
        shared = getattr(getattr(item, "module", None), "shared_bed", None)
        if shared is not None and "bed" in getattr(item, "fixturenames", ()):
            try:
                docker_client().ping()
            except Exception:
                return  # every test here fails on docker_engine_answers, saying why
            sys.modules[shared.__module__].start_shared_bed(session.config, first_needed=index)
            return


@pytest.fixture(scope="session", autouse=True)
def docker_engine_answers() -> None:
    """Every test in this directory needs the Docker engine: without it each one fails, saying
    so. (Autouse fixtures of a conftest.py apply to its own directory only, unlike collection
    hooks, which see every test of the session.)"""
    try:
        docker_client().ping()
    except Exception as exc:
        pytest.fail("Docker engine not reachable: %s. Start it, or run `make testbed` (make test does it first)."
                    % exc, pytrace=False)


def free_ports(count: int) -> list[int]:
    sockets, ports = [], []
    for _number in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
        ports.append(sock.getsockname()[1])
    for sock in sockets:
        sock.close()
    return ports


def image(variant: str) -> str:
    return "%s:%s" % (APP_IMAGE, variant)


def require_images(*variants: str) -> None:
    client = docker_client()
    for variant in variants:
        try:
            client.inspect_image(image(variant))
        except docker_api.NotFound:
            pytest.fail("image %s not built: run testbed/build-app-images.sh (make test does it first)"
                        % image(variant), pytrace=False)


# ----------------------------------------------------------------------------------------------
# nginx
# ----------------------------------------------------------------------------------------------
NGINX_CONF = """
worker_processes 2;
user root;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    upstream {app}_live {{
        include {upstream};
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{fallback_port};
        location / {{ return 503 "no release deployed yet\\n"; }}
    }}
    server {{
        listen 127.0.0.1:{port};
        location /static/ {{ alias {static_root}/; }}
        location / {{
            proxy_pass http://{app}_live;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }}
    }}
}}
"""


class Nginx:
    """A private nginx instance: own prefix, config, pid file and upstream include."""

    def __init__(self, base: Path, app: str) -> None:
        self.prefix = base / "nginx"
        (self.prefix / "tmp").mkdir(parents=True)
        self.conf = self.prefix / "nginx.conf"
        self.upstream_file = self.prefix / "upstream" / ("%s-upstream.conf" % app)
        self.upstream_file.parent.mkdir()
        self.static_root = base / "www" / "static"
        self.static_root.mkdir(parents=True)
        self.port, self.fallback_port = free_ports(2)
        self.upstream_file.write_text("server 127.0.0.1:%d;\n" % self.fallback_port)
        self.conf.write_text(NGINX_CONF.format(prefix=self.prefix, app=app.replace("-", "_"),
                                               upstream=self.upstream_file, fallback_port=self.fallback_port,
                                               port=self.port, static_root=self.static_root))
        self.base_argv = [NGINX, "-p", str(self.prefix), "-c", str(self.conf)]
        self.test_command = self.base_argv + ["-t", "-q"]
        self.reload_command = self.base_argv + ["-s", "reload"]
        self.url = "http://127.0.0.1:%d" % self.port

    def start(self) -> None:
        subprocess.run(self.base_argv, check=True, capture_output=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.get("/")[0]:
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nginx did not start: %s" % (self.prefix / "error.log").read_text())

    def stop(self) -> None:
        pid_file = self.prefix / "nginx.pid"
        if pid_file.exists():
            subprocess.run(self.base_argv + ["-s", "stop"], capture_output=True, check=False)
            deadline = time.monotonic() + 5
            while pid_file.exists() and time.monotonic() < deadline:
                time.sleep(0.05)

    def get(self, path: str = "/health", timeout: float = 5.0) -> tuple[int, t.Optional[str]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            return response.status, response.getheader("X-Release")
        finally:
            conn.close()

    def wait_release(self, release: str, consecutive: int = 10, timeout: float = 15) -> None:
        """Wait until every nginx worker routes to `release` (reloads settle asynchronously)."""
        deadline = time.monotonic() + timeout
        good = 0
        while good < consecutive:
            if time.monotonic() > deadline:
                raise AssertionError("nginx did not settle on release %s" % release)
            good = good + 1 if self.get("/health") == (200, release) else 0
            time.sleep(0.02)

    def upstream_port(self) -> int:
        return int(self.upstream_file.read_text().split(":")[1].split(";")[0])


# ----------------------------------------------------------------------------------------------
# App environment on the "server" (a tmp dir standing in for /opt/<app>)
# ----------------------------------------------------------------------------------------------
class AppHost:
    def __init__(self, base: Path, app: str, nginx: Nginx) -> None:
        self.app = app
        self.nginx = nginx
        self.app_dir = base / "opt" / app
        self.data_dir = self.app_dir / "data"
        self.data_dir.mkdir(parents=True)
        os.chown(self.data_dir, APP_UID, APP_UID)
        os.chmod(self.data_dir, 0o750)
        self.env_file = self.app_dir / ("%s.env" % app)
        self.write_env()
        self.db_path = self.data_dir / "db.sqlite3"
        self.releases_log = self.app_dir / "releases.jsonl"
        self.lock_file = self.app_dir / "deploy.lock"
        self.backups_dir = self.app_dir / "backups"
        self.host_ports = free_ports(2)

    def write_env(self, **extra: str) -> None:
        lines = {"DJANGO_SECRET_KEY": "test-" + secrets.token_hex(16), "DJANGO_ALLOWED_HOST": "127.0.0.1",
                 "DJANGO_DEBUG_FALSE": "1", "DJANGO_DB_PATH": "/data/db.sqlite3"}
        lines.update(extra)
        self.env_file.write_text("".join("%s=%s\n" % item for item in lines.items()))
        os.chmod(self.env_file, 0o600)

    def options(self, **overrides: t.Any) -> dict[str, t.Any]:
        options = {
            "app_name": self.app,
            "app_dir": str(self.app_dir),
            "env_file": str(self.env_file),
            "mounts": ["%s:/data" % self.data_dir],
            "host_ports": list(self.host_ports),
            "health_interval": 0.2,
            "health_timeout": 30,
            "pre_switch_commands": ["python manage.py migrate --noinput"],
            "static_source": "/app/static",
            "static_root": str(self.nginx.static_root),
            "sqlite_path": str(self.db_path),
            "upstream_file": str(self.nginx.upstream_file),
            "proxy_test_command": self.nginx.test_command,
            "proxy_reload_command": self.nginx.reload_command,
            "proxy_verify_url": self.nginx.url + "/health",
            "drain_seconds": 1,
            "stop_grace_seconds": 3,
            "lock_timeout": 30,
        }
        options.update(overrides)
        return options

    def audit_lines(self) -> list[dict[str, t.Any]]:
        if not self.releases_log.exists():
            return []
        return [json.loads(line) for line in self.releases_log.read_text().splitlines() if line.strip()]

    def containers(self, all: bool = True) -> list[dict[str, t.Any]]:
        return docker_client().list_containers(labels={"greenlight.app": self.app}, all=all)

    def running_web(self) -> list[dict[str, t.Any]]:
        return [c for c in self.containers(all=False) if c["Labels"].get("greenlight.service") == "web"]


@pytest.fixture
def app_name() -> t.Iterator[str]:
    name = "gltest-" + secrets.token_hex(3)
    yield name
    client = docker_client()
    for container in client.list_containers(labels={"greenlight.app": name}):
        client.remove_container(container["Id"], force=True)


@pytest.fixture
def nginx(tmp_path: Path, app_name: str) -> t.Iterator[Nginx]:
    proxy = Nginx(tmp_path, app_name)
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture
def app_host(app_name: str, nginx: Nginx) -> t.Iterator[AppHost]:
    """/opt/<app> as app_host lays it out: the app's uid reaches its data directory (pytest's
    tmp_path is root's 0700, which the engine, opening the database as that uid, refuses)."""
    base = Path(tempfile.mkdtemp(prefix="gltest-apphost-"))
    try:
        base.chmod(0o755)
        yield AppHost(base, app_name, nginx)
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# Driving the module through ansible
# ----------------------------------------------------------------------------------------------
def run_module(options: dict[str, t.Any], check: bool = False, diff: bool = False,
               module: str = "greenlight.deploy.container_swap") -> dict[str, t.Any]:
    """`ansible localhost -m <module> -a <json>`; returns the task result."""
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS), ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
               ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    argv = [str(Path(sys.executable).parent / "ansible"), "localhost", "-m", module, "-a", json.dumps(options)]
    if check:
        argv.append("--check")
    if diff:
        argv.append("--diff")
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    try:
        output = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError("ansible output is not JSON (rc %d):\n%s\n%s" % (proc.returncode, proc.stdout,
                                                                              proc.stderr))
    result = output["plays"][0]["tasks"][0]["hosts"]["localhost"]
    result["_rc"] = proc.returncode
    return result


# ----------------------------------------------------------------------------------------------
# Load generator: shared with the benchmarks and the reliability suite (bench/loadgen.py)
# ----------------------------------------------------------------------------------------------
sys.path.insert(0, str(REPO / "bench"))

from loadgen import LoadGenerator  # noqa: E402,F401  (tests import it from here)


# ----------------------------------------------------------------------------------------------
# The engine in a separate process (to kill it, or to run two deploys at once)
# ----------------------------------------------------------------------------------------------
ENGINE_DRIVER = """
import json, sys
sys.path.insert(0, sys.argv[1])
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.errors import SwapError
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.swap import run_swap
try:
    result = run_swap(json.loads(sys.argv[2]))
except SwapError as exc:
    print(json.dumps(dict(exc.result, msg=str(exc)), default=str))
    sys.exit(1)
print(json.dumps(result, default=str))
"""


def start_engine_process(options: dict[str, t.Any]) -> subprocess.Popen:
    """Run run_swap(options) in a child python; stdout is the JSON result (exit 1 on SwapError)."""
    return subprocess.Popen([sys.executable, "-c", ENGINE_DRIVER, str(COLLECTIONS), json.dumps(options)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def lock_holder(path: Path) -> t.Optional[dict[str, t.Any]]:
    try:
        return json.loads(path.read_text() or "null")
    except (FileNotFoundError, ValueError):
        return None


def lock_is_free(path: Path) -> bool:
    import fcntl

    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
    return True


def wait_for_phase(path: Path, phase: str, timeout: float = 90, pid: t.Optional[int] = None) -> dict[str, t.Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        holder = lock_holder(path)
        if holder and holder.get("phase") == phase and not holder.get("released") and \
                (pid is None or holder.get("pid") == pid):
            return holder
        time.sleep(0.05)
    raise AssertionError("lock file never showed phase %s (last: %s)" % (phase, lock_holder(path)))


# ----------------------------------------------------------------------------------------------
# deploy.sh and the playbooks on this machine (the day-2 commands: tests/integration/test_ops_*.py)
# ----------------------------------------------------------------------------------------------
PER_RUN_OPTIONS = ("image", "mode", "rollback_release", "release", "actor", "check_mode")
CLI_DRIVER = ("import sys; sys.path.insert(0, sys.argv[1]); "
              "from ansible_collections.greenlight.deploy.plugins.module_utils._engine.cli import main; "
              "sys.exit(main(sys.argv[3:], config_path=sys.argv[2]))")


def write_deploy_config(app_host: AppHost, **overrides: t.Any) -> Path:
    """deploy.json as deploy_script writes it (root-owned, beside the app directory), and a
    deploy.sh beside it that runs the engine's CLI with it, as the installed one does."""
    path = app_host.app_dir.parent / "deploy.json"
    swap = {k: v for k, v in app_host.options(**overrides).items() if k not in PER_RUN_OPTIONS}
    path.write_text(json.dumps({"swap": swap, "image_repository": APP_IMAGE, "docker_command": shutil.which("docker")}))
    path.chmod(0o644)
    script = path.parent / "deploy.sh"
    script.write_text("#!/bin/sh\nexec %s -c %s %s %s \"$@\"\n" % (
        sys.executable, shlex.quote(CLI_DRIVER), COLLECTIONS, path))
    script.chmod(0o755)
    return path


def run_playbook(playbook: str, app_host: AppHost, *extra: str, check: bool = False,
                 upstream_file: t.Optional[Path] = None) -> subprocess.CompletedProcess:
    """playbooks/<playbook> on this machine (connection local) with the deploy settings pointing at
    app_host's paths and nginx, and deploy_script_link at the deploy.sh of write_deploy_config."""
    settings = {"greenlight_deploy_hosts": "localhost", "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable, "greenlight_app_name": app_host.app,
                "greenlight_app_dir": str(app_host.app_dir),
                "greenlight_upstream_file": str(upstream_file or app_host.nginx.upstream_file),
                "greenlight_env_file": str(app_host.env_file), "deploy_script_become": False,
                "deploy_script_link": str(app_host.app_dir.parent / "deploy.sh"),
                "deploy_script_mounts": ["%s:/data" % app_host.data_dir]}
    argv = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,",
            str(REPO / "playbooks" / playbook), "-e", json.dumps(settings)]
    for item in extra:
        argv += ["-e", item]
    if check:
        argv.append("--check")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS), ANSIBLE_LOCALHOST_WARNING="0",
               ANSIBLE_FORCE_COLOR="false")
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
