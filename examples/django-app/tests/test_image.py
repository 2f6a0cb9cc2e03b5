"""Tests of the built example-app images (greenlight/todo:<variant>), driven through the docker CLI.

    testbed/build-app-images.sh && pytest examples/django-app/tests

Fails (never skips) when docker or greenlight/todo:v1 is missing, and each variant test when its
image is: a suite that passes by skipping would hide a test bed that is not there.
Containers are named gltest-app-<random>, publish only on 127.0.0.1 and are removed afterwards.
Env: TODO_IMAGE (default greenlight/todo).
"""
import json
import os
import pathlib
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest

IMAGE = os.environ.get("TODO_IMAGE", "greenlight/todo")
APP_DIR = pathlib.Path(__file__).resolve().parents[1]
APP_UID = 10001


def docker(*args, check=True, timeout=120):
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def image_exists(tag):
    return shutil.which("docker") is not None and docker("image", "inspect", tag, check=False).returncode == 0


def _docker_problem():
    if shutil.which("docker") is None:
        return "docker CLI not installed"
    info = docker("info", check=False, timeout=30)
    if info.returncode != 0:
        where = os.environ.get("DOCKER_HOST") or "the default socket"
        return f"Docker engine not reachable at {where}: {info.stderr.strip()[-300:]}"
    if not image_exists(f"{IMAGE}:v1"):
        return f"{IMAGE}:v1 not built (run testbed/build-app-images.sh)"
    return None


pytestmark = [pytest.mark.docker]


@pytest.fixture(scope="module", autouse=True)
def docker_and_v1_image():
    problem = _docker_problem()
    if problem:
        pytest.fail(problem, pytrace=False)


def need(variant):
    if not image_exists(f"{IMAGE}:{variant}"):
        pytest.fail(f"{IMAGE}:{variant} not built (run testbed/build-app-images.sh {variant})", pytrace=False)
    return f"{IMAGE}:{variant}"


def http(url, data=None, headers=None, timeout=15):
    """(status, headers, body) without raising on HTTP errors."""
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as err:
        resp = err
    with resp:
        return resp.status, resp.headers, resp.read().decode("utf-8", "replace")


class Apps:
    """Starts app containers / one-off commands and removes them all at the end."""

    def __init__(self, tmp_path_factory):
        self.tmp = tmp_path_factory
        self.names = []

    def data_dir(self):
        d = self.tmp.mktemp("data")
        os.chown(d, APP_UID, APP_UID)
        d.chmod(0o750)
        return d

    def env_args(self, secret, extra_env):
        env = {"DJANGO_SECRET_KEY": secret, "DJANGO_DEBUG_FALSE": "1", "DJANGO_ALLOWED_HOST": "todo.example.test"}
        env.update(extra_env or {})
        args = []
        for k, v in env.items():
            if v is not None:
                args += ["-e", f"{k}={v}"]
        return args

    def manage(self, image, data_dir, *cmd, secret="test-secret", env=None):
        """One-off `python manage.py ...` in a throwaway container; returns CompletedProcess."""
        name = f"gltest-app-{uuid.uuid4().hex[:10]}"
        self.names.append(name)
        return docker("run", "--rm", "--name", name, "-v", f"{data_dir}:/data", *self.env_args(secret, env),
                      image, "python", "manage.py", *cmd, check=False, timeout=180)

    def migrate(self, image, data_dir, **kw):
        proc = self.manage(image, data_dir, "migrate", "--noinput", **kw)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    def start(self, image, data_dir, secret="test-secret", env=None, wait=True):
        name = f"gltest-app-{uuid.uuid4().hex[:10]}"
        self.names.append(name)
        docker("run", "-d", "--name", name, "-p", "127.0.0.1::8000", "-v", f"{data_dir}:/data",
               *self.env_args(secret, env), image)
        port = docker("port", name, "8000/tcp").stdout.splitlines()[0].rsplit(":", 1)[1]
        app = App(name, f"http://127.0.0.1:{port}")
        if wait:
            app.wait_until_answering()
        return app

    def cleanup(self):
        for name in self.names:
            docker("rm", "-f", "-v", name, check=False)


class App:
    def __init__(self, name, url):
        self.name, self.url = name, url

    def get(self, path, **kw):
        return http(self.url + path, **kw)

    def wait_until_answering(self, timeout=40):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return self.get("/health", timeout=3)
            except (urllib.error.URLError, ConnectionError, OSError):
                running = docker("inspect", "-f", "{{.State.Running}}", self.name, check=False).stdout.strip()
                if running != "true":
                    logs = docker("logs", self.name, check=False)
                    raise AssertionError(f"container {self.name} exited:\n{logs.stdout}\n{logs.stderr}")
                time.sleep(0.3)
        raise AssertionError(f"{self.name} did not answer on {self.url} within {timeout}s")

    def title(self, path="/"):
        status, _, html = self.get(path)
        assert status == 200, html[:500]
        return html.split("<title>", 1)[1].split("</title>", 1)[0].strip()

    def create_list(self, name, items=()):
        """Create a list (and items) through the real forms, CSRF included; returns the list URL."""
        sys.path.insert(0, str(APP_DIR / "functional_tests"))
        try:
            import test_todo  # the functional tests' tiny browser
        finally:
            sys.path.pop(0)
        old = test_todo.BASE_URL
        test_todo.BASE_URL = self.url
        try:
            b = test_todo.Browser()
            _, _, _, home = b.get("/")
            status, list_url, _, page = b.submit(home, "new-list", {"name": name})
            assert status == 200, page[:500]
            for text in items:
                status, _, _, page = b.submit(page, "new-item", {"text": text})
                assert status == 200 and text in page, page[:1000]
            return list_url
        finally:
            test_todo.BASE_URL = old


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    a = Apps(tmp_path_factory)
    yield a
    a.cleanup()


@pytest.fixture(scope="module")
def v1(apps):
    """A migrated v1 app on a fresh data dir."""
    data = apps.data_dir()
    apps.migrate(f"{IMAGE}:v1", data)
    app = apps.start(f"{IMAGE}:v1", data)
    app.data = data
    return app


# --- image metadata ----------------------------------------------------------------------------

def test_image_metadata():
    info = json.loads(docker("image", "inspect", f"{IMAGE}:v1").stdout)[0]
    cfg = info["Config"]
    assert cfg["User"] in ("10001:10001", "10001", "app")
    assert "8000/tcp" in cfg["ExposedPorts"]
    assert cfg["Labels"]["org.opencontainers.image.revision"] == "v1"
    env = dict(e.split("=", 1) for e in cfg["Env"])
    assert env["GREENLIGHT_RELEASE"] == "v1"
    assert env["PATH"].startswith("/venv/bin:")
    assert not any("SECRET" in k for k in env), env
    assert cfg["Healthcheck"]["Test"][0] == "CMD"
    assert cfg["Cmd"][0] == "gunicorn" and cfg.get("Entrypoint") in (None, [])  # exec form: PID 1
    out = docker("run", "--rm", f"{IMAGE}:v1", "sh", "-c",
                 "id -u; id -g; stat -c %u:%g /data; test -s /app/static/lists/style.css && echo static-ok;"
                 " cd / && command -v python && python -c 'import django, gunicorn; print(django.get_version())'").stdout.split()
    assert out[:3] == ["10001", "10001", "10001:10001"]
    assert "static-ok" in out
    assert "/venv/bin/python" in out
    assert out[-1].startswith("5.2.")


def test_no_secrets_in_history_or_labels(apps):
    secret = f"runtime-secret-{uuid.uuid4().hex}"
    data = apps.data_dir()
    apps.migrate(f"{IMAGE}:v1", data, secret=secret)
    app = apps.start(f"{IMAGE}:v1", data, secret=secret)
    assert app.get("/health")[0] == 200
    for variant in ("v1", "v2", "bad-health", "bad-migration"):
        tag = f"{IMAGE}:{variant}"
        if not image_exists(tag):
            continue
        history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", tag).stdout
        inspect = docker("image", "inspect", tag).stdout
        for text in (history, inspect):
            assert secret not in text
        # The only key ever in a layer command is the literal throwaway one used for collectstatic.
        keys = {line.split("DJANGO_SECRET_KEY=", 1)[1].split()[0]
                for line in history.splitlines() if "DJANGO_SECRET_KEY=" in line}
        assert keys == {"build-only"}, keys
        assert "DJANGO_SECRET_KEY" not in json.dumps(json.loads(inspect)[0]["Config"]["Env"])


def test_secret_key_is_required_without_debug(apps):
    proc = docker("run", "--rm", "-e", "DJANGO_DEBUG_FALSE=1", f"{IMAGE}:v1", "python", "manage.py", "check",
                  check=False)
    assert proc.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in proc.stderr


# --- running v1 ----------------------------------------------------------------------------------

def test_health_before_migrate_is_503(apps):
    app = apps.start(f"{IMAGE}:v1", apps.data_dir())
    status, headers, body = app.get("/health")
    assert status == 503, body
    assert json.loads(body)["status"] == "error"
    assert headers["X-Release"] == "v1"


def test_health_and_title(v1):
    status, headers, body = v1.get("/health")
    assert status == 200, body
    assert json.loads(body) == {"status": "ok", "release": "v1", "database": "ok"}
    assert headers["X-Release"] == "v1"
    assert v1.title() == "To-Do lists"
    assert v1.get("/")[1]["X-Release"] == "v1"


def test_allowed_hosts(v1):
    assert v1.get("/", headers={"Host": "todo.example.test"})[0] == 200
    assert v1.get("/", headers={"Host": "localhost"})[0] == 200
    assert v1.get("/", headers={"Host": "evil.example"})[0] == 400


def test_functional_tests_pass_against_container(v1):
    env = dict(os.environ, TODO_BASE_URL=v1.url, TODO_EXPECT_RELEASE="v1")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(APP_DIR / "functional_tests")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    passed = re.search(r"(\d+) passed", proc.stdout)
    assert passed and int(passed.group(1)) >= 7, proc.stdout  # they really ran, not skipped


def test_docker_healthcheck_becomes_healthy(v1):
    deadline = time.monotonic() + 60
    status = None
    while time.monotonic() < deadline:
        status = docker("inspect", "-f", "{{.State.Health.Status}}", v1.name).stdout.strip()
        if status == "healthy":
            return
        time.sleep(1)
    pytest.fail(f"docker health status stayed {status!r}")


def test_gunicorn_is_pid1_with_two_workers(v1):
    out = docker("exec", v1.name, "python", "-c",
                 "import os\n"
                 "for p in sorted(d for d in os.listdir('/proc') if d.isdigit()):\n"
                 "    c = open(f'/proc/{p}/cmdline','rb').read().replace(b'\\0', b' ').decode().strip()\n"
                 "    print(p, c)\n").stdout
    procs = dict(line.split(" ", 1) for line in out.strip().splitlines())
    assert "gunicorn" in procs["1"], procs
    workers = [p for p, c in procs.items() if p != "1" and "gunicorn" in c]
    assert len(workers) == 2, procs


def test_sigterm_is_graceful_and_in_flight_request_finishes(apps):
    data = apps.data_dir()
    apps.migrate(f"{IMAGE}:v1", data)
    app = apps.start(f"{IMAGE}:v1", data)
    result = {}

    def slow_request():
        try:
            result["resp"] = app.get("/slow/?seconds=3", timeout=20)
        except Exception as exc:  # noqa: BLE001 - reported below
            result["error"] = exc

    t = threading.Thread(target=slow_request)
    t.start()
    time.sleep(0.8)  # the request is in flight
    started = time.monotonic()
    docker("stop", "-t", "30", app.name, timeout=60)
    took = time.monotonic() - started
    t.join(30)
    assert "error" not in result, result
    status, headers, body = result["resp"]
    assert status == 200 and json.loads(body)["slept"] == 3.0
    assert took < 15, f"docker stop took {took:.1f}s: SIGTERM not handled gracefully"
    state = json.loads(docker("inspect", "-f", "{{json .State}}", app.name).stdout)
    assert state["ExitCode"] == 0, state
    logs = docker("logs", app.name).stdout + docker("logs", app.name).stderr
    assert "Handling signal: term" in logs
    assert '"GET /slow/?seconds=3 HTTP/1.1" 200' in logs  # access log on stdout


def test_data_survives_container_recreation(apps):
    data = apps.data_dir()
    apps.migrate(f"{IMAGE}:v1", data)
    first = apps.start(f"{IMAGE}:v1", data)
    name = f"persisted {uuid.uuid4().hex[:8]}"
    list_url = first.create_list(name, ["an item that must survive"])
    docker("rm", "-f", first.name)
    second = apps.start(f"{IMAGE}:v1", data)
    assert name in second.get("/")[2]
    path = list_url.split("://", 1)[1].split("/", 1)[1]
    assert "an item that must survive" in second.get("/" + path)[2]


def test_session_survives_secret_rotation_with_fallbacks(apps):
    data = apps.data_dir()
    apps.migrate(f"{IMAGE}:v1", data)

    def counter(app, cookie):
        status, headers, body = app.get("/session/", headers={"Cookie": cookie} if cookie else {})
        assert status == 200, body
        new = headers.get("Set-Cookie")
        return json.loads(body)["count"], (new.split(";", 1)[0] if new else cookie)

    old = apps.start(f"{IMAGE}:v1", data, secret="key-A")
    n1, cookie = counter(old, None)
    n2, cookie = counter(old, cookie)
    assert (n1, n2) == (1, 2)
    docker("rm", "-f", old.name)

    rotated = apps.start(f"{IMAGE}:v1", data, secret="key-B", env={"DJANGO_SECRET_KEY_FALLBACKS": "key-X,key-A"})
    n3, cookie_b = counter(rotated, cookie)
    assert n3 == 3, "session signed with the old key was not accepted via DJANGO_SECRET_KEY_FALLBACKS"
    docker("rm", "-f", rotated.name)

    no_fallback = apps.start(f"{IMAGE}:v1", data, secret="key-C")
    n4, _ = counter(no_fallback, cookie)
    assert n4 == 1, "a session signed with an unknown key must not be accepted"


# --- variants -------------------------------------------------------------------------------------

def test_bad_health_variant(apps):
    image = need("bad-health")
    data = apps.data_dir()
    apps.migrate(image, data)
    app = apps.start(image, data)
    status, headers, body = app.get("/health")
    assert status == 500, body
    assert headers["X-Release"] == "bad-health"
    assert app.title() == "To-Do lists"  # everything else works


def test_bad_migration_variant_fails_after_changing_the_db(apps):
    image = need("bad-migration")
    data = apps.data_dir()
    apps.migrate(f"{IMAGE}:v1", data)
    proc = apps.manage(image, data, "migrate", "--noinput")
    assert proc.returncode != 0, proc.stdout
    assert "bad-migration variant" in proc.stderr
    # It left real damage behind (what a deploy has to restore from its backup).
    db = sqlite3.connect(f"file:{data / 'db.sqlite3'}?mode=ro", uri=True)
    try:
        columns = [row[1] for row in db.execute("PRAGMA table_info(lists_item)")]
        names = [row[0] for row in db.execute("SELECT name FROM lists_list")]
        applied = [row[0] for row in db.execute("SELECT name FROM django_migrations WHERE app='lists'")]
    finally:
        db.close()
    assert "flagged" in columns
    assert "bad-migration marker" in names
    assert applied == ["0001_initial"]


def test_v2_migrates_and_changes_title_and_v1_keeps_working(apps):
    image = need("v2")
    data = apps.data_dir()
    apps.migrate(f"{IMAGE}:v1", data)
    old = apps.start(f"{IMAGE}:v1", data)
    old.create_list("made by v1", ["v1 item"])

    proc = apps.migrate(image, data)
    assert "lists.0002_item_done... OK" in proc.stdout
    shown = apps.manage(image, data, "showmigrations", "lists").stdout
    assert "[X] 0002_item_done" in shown

    new = apps.start(image, data)
    status, headers, body = new.get("/health")
    assert status == 200 and json.loads(body)["release"] == "v2" and headers["X-Release"] == "v2"
    assert new.title() == "To-Do lists v2"
    home = new.get("/")[2]
    assert "made by v1" in home
    list_url = new.create_list("made by v2", ["v2 item"])
    page = new.get("/" + list_url.split("://", 1)[1].split("/", 1)[1])[2]
    assert 'class="state">open<' in page  # the new field is shown

    # Expand-only migration: the old release, still running during a swap, can still write.
    old.create_list("v1 after v2 migrate", ["still works"])
    assert old.title() == "To-Do lists"
