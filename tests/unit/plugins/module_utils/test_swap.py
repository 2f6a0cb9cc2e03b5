"""Fast unit tests of the swap engine (no Docker)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from tarballs import make_tar

from ansible_collections.greenlight.deploy.plugins.module_utils._engine import docker_api, errors, http_probe, labels, phases_traffic, proxy_nginx, sqlite
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.audit import append_jsonl, audit_record
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.envfile import parse_env_file
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.errors import (
    LockTimeout,
    OptionsError,
    SwapError,
)
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.labels import config_hash
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.lock import DeployLock, holder_message
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.options import (
    derive_release,
    options_from_dict,
    parse_image_reference,
)
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.static import extract_static
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.swap import Swap, run_swap

MODULE_UTILS = Path(labels.__file__).resolve().parent
IMAGE_ID = "sha256:" + "ab" * 32


# -- image references ---------------------------------------------------------------------------
@pytest.mark.parametrize("reference, tag, digest", [
    ("greenlight/todo:v1", "v1", None),
    ("todo", None, None),
    ("registry.greenlight.test:5000/greenlight/todo:v2", "v2", None),
    ("localhost:5000/a/b/c:1.2.3-rc_1", "1.2.3-rc_1", None),
    ("ghcr.io/org/app@sha256:" + "0" * 64, None, "sha256:" + "0" * 64),
    ("ghcr.io/org/app:v3@sha256:" + "1" * 64, "v3", "sha256:" + "1" * 64),
    ("my_app__x/y-z.w:latest", "latest", None),
])
def test_valid_image_references(reference, tag, digest):
    parts = parse_image_reference(reference)
    assert parts["tag"] == tag and parts["digest"] == digest


@pytest.mark.parametrize("reference", [
    "", "Greenlight/todo:v1", "todo:", "todo:-bad", ":v1", "todo@sha256:123", "todo v1", "/todo", "todo//x",
    "todo:v1:v2", "registry:5000/", "todo:" + "a" * 129, "todo@md5", "http://registry/todo",
])
def test_invalid_image_references(reference):
    with pytest.raises(ValueError):
        parse_image_reference(reference)


def test_image_id_is_accepted():
    assert parse_image_reference(IMAGE_ID)["id"] == IMAGE_ID


@pytest.mark.parametrize("reference, expected", [
    ("greenlight/todo:v1", "v1"),
    ("greenlight/todo", "abababababab"),
    ("greenlight/todo:latest", "abababababab"),
    ("greenlight/todo@sha256:" + "c" * 64, "cccccccccccc"),
    ("greenlight/todo:2024.01@sha256:" + "c" * 64, "2024.01"),
    (IMAGE_ID, "abababababab"),
])
def test_derive_release(reference, expected):
    assert derive_release(reference, IMAGE_ID) == expected


# -- options ------------------------------------------------------------------------------------
def test_defaults_are_derived_from_app_name():
    opts = options_from_dict({"app_name": "todo", "image": "greenlight/todo:v1", "static_source": "/app/static"})
    assert opts.app_dir == "/opt/todo"
    assert opts.lock_file == "/opt/todo/deploy.lock"
    assert opts.releases_log == "/opt/todo/releases.jsonl"
    assert opts.backups_dir == "/opt/todo/backups"
    assert opts.upstream_file == "/etc/nginx/greenlight/todo-upstream.conf"
    assert opts.static_root == "/var/www/todo/static"
    assert opts.host_ports == [8001, 8002] and opts.container_port == 8000
    assert opts.health_path == "/health" and opts.health_statuses == [200]
    assert opts.restart_policy == "unless-stopped"


def test_all_option_errors_reported_at_once():
    with pytest.raises(OptionsError) as caught:
        options_from_dict({
            "app_name": "Bad Name",
            "image": "not a ref",
            "mounts": ["./relative:/data", "/x:/y:rx", "/only-one"],
            "host_ports": [8001, 8001],
            "health_timeout": 0,
            "health_statuses": [99],
            "pre_switch_commands": [[], "  "],
            "proxy_verify_url": "http://10.0.0.1/health",
            "services": [{"name": "web", "command": "x"}, {"name": "w", "command": ""}],
            "labels": {"greenlight.app": "x"},
            "restart_policy": "sometimes",
            "stop_grace_seconds": -1,
            "env_file": "relative.env",
        })
    message = str(caught.value)
    for fragment in ("app_name", "not a ref", "./relative:/data", "mode must be ro or rw", "/only-one", "host_ports",
                     "health_timeout", "health_statuses", "pre_switch_commands", "proxy_verify_url",
                     "name 'web' is reserved", "'w' has no valid command", "greenlight.", "restart_policy",
                     "stop_grace_seconds", "env_file must be an absolute path"):
        assert fragment in message, fragment


def test_unknown_option_and_missing_app_name():
    with pytest.raises(OptionsError, match="unknown option.*colour"):
        options_from_dict({"app_name": "todo", "image": "x:1", "colour": "green"})
    with pytest.raises(OptionsError, match="app_name is required"):
        options_from_dict({"image": "x:1"})


def test_mode_specific_options():
    with pytest.raises(OptionsError, match="image is required"):
        options_from_dict({"app_name": "todo"})
    with pytest.raises(OptionsError, match="image is not used with mode=rollback"):
        options_from_dict({"app_name": "todo", "mode": "rollback", "image": "x:1"})
    with pytest.raises(OptionsError, match="rollback_release is only used"):
        options_from_dict({"app_name": "todo", "image": "x:1", "rollback_release": "v1"})
    opts = options_from_dict({"app_name": "todo", "mode": "rollback", "rollback_release": "v1"})
    assert opts.mode == "rollback"


def test_services_are_parsed():
    opts = options_from_dict({"app_name": "todo", "image": "x:1", "services": [
        {"name": "worker", "command": ["python", "worker.py"]},
        {"name": "beat", "command": "python beat.py", "singleton": True}]})
    assert [(s.name, s.singleton) for s in opts.services] == [("worker", False), ("beat", True)]
    with pytest.raises(OptionsError, match="used twice"):
        options_from_dict({"app_name": "todo", "image": "x:1", "services": [
            {"name": "w", "command": "a"}, {"name": "w", "command": "b"}]})


# -- config hash --------------------------------------------------------------------------------
def _hash(**overrides):
    values = dict(image_id=IMAGE_ID, service="web", command=None, container_port=8000, mounts=["/d:/data"],
                  env_sha256="e" * 64, restart_policy="unless-stopped", labels={"a": "1", "b": "2"})
    values.update(overrides)
    return config_hash(**values)


def test_config_hash_is_stable_and_sensitive():
    assert _hash() == _hash()
    assert _hash() == "%s" % _hash(labels={"b": "2", "a": "1"})  # label order does not matter
    assert len(_hash()) == 16
    as_string = _hash(command="python -c 'print(1)'", service="w")
    assert as_string == _hash(command=["python", "-c", "print(1)"], service="w")
    for change in (dict(image_id="sha256:" + "cd" * 32), dict(env_sha256="f" * 64), dict(mounts=["/d:/data:ro"]),
                   dict(container_port=8080), dict(restart_policy="always"), dict(labels={}), dict(service="w")):
        assert _hash(**change) != _hash(), change


def test_config_hash_known_value():
    """Guards against accidental changes: a new hash would redeploy every server."""
    assert _hash() == config_hash(IMAGE_ID, "web", None, 8000, ["/d:/data"], "e" * 64, "unless-stopped",
                                  {"a": "1", "b": "2"})
    expected = labels.hashlib.sha256(json.dumps({
        "image_id": IMAGE_ID, "service": "web", "command": None, "container_port": 8000, "mounts": ["/d:/data"],
        "env_sha256": "e" * 64, "restart_policy": "unless-stopped", "labels": {"a": "1", "b": "2"}},
        sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    assert _hash() == expected


# -- env file -----------------------------------------------------------------------------------
def test_env_file_parsed_like_docker():
    content = "\ufeff# comment\n\nA=1\n  B= spaced value \nC=\"quoted\"\nD=x=y\nFROM_ENV\nMISSING\n"
    assert parse_env_file(content, {"FROM_ENV": "yes"}) == ["A=1", "B= spaced value ", 'C="quoted"', "D=x=y",
                                                            "FROM_ENV=yes"]


def test_env_file_error_never_shows_values():
    with pytest.raises(ValueError) as caught:
        parse_env_file("GOOD=secret-value\nBAD KEY=other-secret\n", {})
    assert "line 2" in str(caught.value) and "secret" not in str(caught.value)


# -- upstream -----------------------------------------------------------------------------------
def test_render_and_parse_upstream():
    assert proxy_nginx.render_upstream(8002) == "server 127.0.0.1:8002;\n"
    assert proxy_nginx.parse_upstream("server 127.0.0.1:8099;\n") == 8099
    assert proxy_nginx.parse_upstream("# nothing\n") is None
    for bad in (0, 70000, "8001", True):
        with pytest.raises(ValueError):
            proxy_nginx.render_upstream(bad)


def test_switch_upstream_tests_then_reloads(tmp_path):
    upstream = tmp_path / "app-upstream.conf"
    upstream.write_text("server 127.0.0.1:8099;\n")
    upstream.chmod(0o640)
    calls = tmp_path / "calls"
    test = [sys.executable, "-c", "import sys; open(sys.argv[1], 'a').write('test:' + open(sys.argv[2]).read())",
            str(calls), str(upstream)]
    reload = [sys.executable, "-c", "import sys; open(sys.argv[1], 'a').write('reload\\n')", str(calls)]
    result = phases_traffic.switch_upstream(str(upstream), 8001, test, reload)
    assert result == {"previous_port": 8099, "port": 8001, "content_changed": True}
    assert upstream.read_text() == "server 127.0.0.1:8001;\n"
    assert calls.read_text() == "test:server 127.0.0.1:8001;\nreload\n"  # the test saw the new content
    assert oct(upstream.stat().st_mode & 0o777) == "0o640"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app-upstream.conf", "calls"]  # no temp file left


def test_switch_upstream_restores_on_failed_test(tmp_path):
    upstream = tmp_path / "app-upstream.conf"
    upstream.write_text("server 127.0.0.1:8001;\n")
    marker = tmp_path / "reloaded"
    with pytest.raises(errors.ProxyError, match="proxy test command .* exited 1: broken config"):
        phases_traffic.switch_upstream(str(upstream), 8002, "sh -c 'echo broken config; exit 1'",
                                     ["touch", str(marker)])
    assert upstream.read_text() == "server 127.0.0.1:8001;\n"
    assert not marker.exists()


def test_verify_url_must_be_local():
    with pytest.raises(ValueError):
        http_probe.fetch_release("http://192.0.2.1/health")


# -- lock ---------------------------------------------------------------------------------------
def test_lock_timeout_names_the_holder(tmp_path):
    path = str(tmp_path / "deploy.lock")
    holder = DeployLock(path, {"pid": 4242, "user": "alice", "host": "web1", "release": "v7", "action": "deploy",
                               "since": "2026-01-01T00:00:00Z", "phase": "lock"})
    holder.acquire(1)
    holder.update(phase="health")
    blocked = DeployLock(path, {"pid": 1})
    started = time.monotonic()
    with pytest.raises(LockTimeout) as caught:
        blocked.acquire(0.3)
    assert 0.3 <= time.monotonic() - started < 2
    message = str(caught.value)
    for fragment in ("pid 4242", "user alice on web1", "release v7", "phase health", "since 2026-01-01T00:00:00Z"):
        assert fragment in message
    holder.release()
    blocked.acquire(1)
    assert blocked.previous is None  # the previous holder ended cleanly
    blocked.release()


def test_holder_message_without_details():
    assert "holder details unreadable" in holder_message("/x/deploy.lock", None, 1.0)


def test_killed_holder_leaves_no_stale_lock(tmp_path):
    path = tmp_path / "deploy.lock"
    code = textwrap.dedent("""
        import sys, time
        sys.path[:0] = %r
        from ansible_collections.greenlight.deploy.plugins.module_utils._engine.lock import DeployLock
        lock = DeployLock(sys.argv[1], {"pid": 1, "release": "v9", "phase": "lock"})
        lock.acquire(5)
        lock.update(phase="drain", old_container="abc")
        print("locked", flush=True)
        time.sleep(60)
    """ % (sys.path,))
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(LockTimeout):
            DeployLock(str(path), {}).acquire(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    lock = DeployLock(str(path), {"pid": os.getpid()})
    lock.acquire(1)
    assert lock.previous["phase"] == "drain" and lock.previous["old_container"] == "abc"  # interrupted run seen
    lock.release()


# -- audit log ----------------------------------------------------------------------------------
def test_audit_record_shape(tmp_path):
    result = {"action": "deploy", "changed": True, "release": "v2", "previous_release": "v1",
              "image": "greenlight/todo:v2", "image_id": IMAGE_ID, "image_digest": None, "live_port": 8002,
              "container_id": "c" * 64, "container_name": "todo-web-v2-abc123", "services": [],
              "phases": {"plan": 0.01}, "health_attempts": 3, "rolled_back": False, "msg": "not recorded",
              "diff": {"before": {}}}
    actor = {"user": "deploy", "host": "web1", "pid": 7}
    record = audit_record(result, "todo", actor)
    assert record["result"] == "ok" and record["app"] == "todo" and record["actor"] == actor
    assert record["time"].endswith("Z")
    assert "msg" not in record and "diff" not in record
    failed = audit_record(dict(result, failed_phase="health", error="boom"), "todo", actor)
    assert failed["result"] == "failed" and failed["failed_phase"] == "health" and failed["error"] == "boom"
    log = tmp_path / "sub" / "releases.jsonl"
    append_jsonl(str(log), record)
    append_jsonl(str(log), failed)
    lines = log.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["failed_phase"] == "health"
    assert oct(log.stat().st_mode & 0o777) == "0o640"


# -- static files and SQLite ----------------------------------------------------------------------


def test_extract_static_adds_and_keeps(tmp_path):
    root = tmp_path / "static"
    root.mkdir()
    (root / "old.abc123.css").write_text("from the previous release")
    (root / "same.css").write_text("same")
    stream = make_tar([("static", None), ("static/css", None), ("static/css/app.1234.css", b"body{}"),
                   ("static/same.css", b"same"), ("static/link", ("/etc/passwd",)), ("static/../evil", b"x")])
    counts = extract_static(stream, "/app/static", str(root))
    assert counts == {"added": 1, "updated": 0, "unchanged": 1, "skipped": 2}
    assert (root / "css" / "app.1234.css").read_text() == "body{}"
    assert (root / "old.abc123.css").exists()
    assert not (root / "link").exists() and not (tmp_path / "evil").exists()
    assert oct((root / "css" / "app.1234.css").stat().st_mode & 0o777) == "0o644"


def test_sqlite_snapshot_and_restore(tmp_path):
    # As on a server: the app's uid owns the database and its directory, which it can reach.
    base = Path(tempfile.mkdtemp(prefix="gltest-db-"))
    try:
        base.chmod(0o711)
        data = base / "data"
        data.mkdir()
        db = data / "db.sqlite3"
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TABLE t (x)")
            conn.execute("INSERT INTO t VALUES ('before')")
        if os.geteuid() == 0:
            for path in (data, db):
                os.chown(path, 10001, 10001)
        snapshot = tmp_path / "backups" / "snap.sqlite3"
        sqlite.sqlite_snapshot(str(db), str(snapshot))
        with sqlite3.connect(db) as conn:
            conn.execute("ALTER TABLE t ADD COLUMN broken")
            conn.execute("INSERT INTO t VALUES ('after', 1)")
        sqlite.sqlite_restore(str(snapshot), str(db))
        conn = sqlite3.connect(db)
        try:
            assert [r[0] for r in conn.execute("SELECT * FROM t")] == ["before"]
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            conn.close()
    finally:
        shutil.rmtree(base)


# -- engine with a fake Docker ------------------------------------------------------------------
class FakeDocker:
    """Enough of DockerClient for plan/check mode; any write is an error."""

    def __init__(self, containers=None, images=None):
        self.containers = containers or []
        self.images = images or {}

    def inspect_image(self, reference):
        if reference not in self.images:
            raise docker_api.NotFound("no such image")
        return self.images[reference]

    def list_containers(self, labels=None, all=True):
        return [c for c in self.containers if all or c["State"] == "running"]

    def __getattr__(self, name):
        raise AssertionError("check mode must not call %s" % name)


def _web(opts_dict, release, port, state="running", env_sha=None):
    opts = options_from_dict(opts_dict)
    digest = config_hash(IMAGE_ID, "web", None, 8000, opts.mounts, env_sha, opts.restart_policy, opts.labels)
    return {"Id": "id-%s-%d" % (release, port), "Names": ["/todo-web-%s-x" % release], "State": state,
            "ImageID": IMAGE_ID, "Created": port,
            "Labels": {"greenlight.app": "todo", "greenlight.release": release, "greenlight.service": "web",
                       "greenlight.config-hash": digest, "greenlight.port": str(port),
                       "greenlight.image": "greenlight/todo:%s" % release}}


def _opts(tmp_path, **extra):
    upstream = tmp_path / "upstream.conf"
    if not upstream.exists():
        upstream.write_text("server 127.0.0.1:8001;\n")
    values = {"app_name": "todo", "image": "greenlight/todo:v1", "app_dir": str(tmp_path / "app"),
              "upstream_file": str(upstream)}
    values.update(extra)
    return values


def test_unchanged_when_live_matches(tmp_path):
    values = _opts(tmp_path)
    docker = FakeDocker([_web(values, "v1", 8001)], {"greenlight/todo:v1": {"Id": IMAGE_ID, "RepoDigests": []}})
    result = Swap(options_from_dict(values), docker=docker).run()
    assert result["changed"] is False and result["container_id"] == "id-v1-8001"
    assert not (tmp_path / "app").exists()  # no lock, no log


def test_check_mode_predicts_without_touching(tmp_path):
    values = _opts(tmp_path, image="greenlight/todo:v2", check_mode=True,
                   pre_switch_commands=["python manage.py migrate --noinput"], sqlite_path="/srv/db.sqlite3")
    images = {"greenlight/todo:v2": {"Id": "sha256:" + "22" * 32, "RepoDigests": ["r/todo@sha256:" + "3" * 64]}}
    images[IMAGE_ID] = {"Id": IMAGE_ID, "RepoDigests": ["r/todo@sha256:" + "1" * 64]}
    docker = FakeDocker([_web(values, "v1", 8001)], images)
    result = Swap(options_from_dict(values), docker=docker).run()
    assert result["changed"] is True and result["action"] == "deploy"
    assert result["diff"]["before"]["digest"] == "r/todo@sha256:" + "1" * 64
    assert set(result["diff"]["before"]) == set(result["diff"]["after"])
    assert result["diff"]["before"]["release"] == "v1" and result["diff"]["after"]["release"] == "v2"
    assert result["diff"]["after"]["port"] == 8002
    assert result["diff"]["after"]["digest"] == "r/todo@sha256:" + "3" * 64
    assert any("migrate" in step for step in result["actions"])
    assert not (tmp_path / "app").exists()


def test_config_change_when_only_env_differs(tmp_path):
    env = tmp_path / "todo.env"
    env.write_text("A=1\n")
    values = _opts(tmp_path, env_file=str(env), check_mode=True)
    docker = FakeDocker([_web(values, "v1", 8001, env_sha="0" * 64)],
                        {"greenlight/todo:v1": {"Id": IMAGE_ID, "RepoDigests": []}})
    result = Swap(options_from_dict(values), docker=docker).run()
    assert result["changed"] is True and result["action"] == "config-change"
    assert "A=1" not in json.dumps(result)


def test_missing_image_fails_in_plan(tmp_path):
    with pytest.raises(SwapError, match="not on this server; pull it first") as caught:
        Swap(options_from_dict(_opts(tmp_path)), docker=FakeDocker()).run()
    assert caught.value.result["failed_phase"] == "plan"
    line = json.loads((tmp_path / "app" / "releases.jsonl").read_text())
    assert line["failed_phase"] == "plan" and line["result"] == "failed"


def test_rollback_without_kept_release(tmp_path):
    values = _opts(tmp_path, mode="rollback", image=None)
    docker = FakeDocker([_web(_opts(tmp_path), "v1", 8001)], {IMAGE_ID: {"Id": IMAGE_ID, "RepoDigests": []}})
    with pytest.raises(SwapError, match="no previous release"):
        Swap(options_from_dict(dict(values, check_mode=True)), docker=docker).run()
    assert not (tmp_path / "app").exists()  # check mode writes no audit line, even on failure


def test_rollback_picks_newest_kept_release(tmp_path):
    base = _opts(tmp_path)
    containers = [_web(base, "v1", 8002, state="exited"), _web(base, "v2", 8001)]
    containers[0]["Created"] = 10
    docker = FakeDocker(containers, {IMAGE_ID: {"Id": IMAGE_ID, "RepoDigests": []}})
    result = Swap(options_from_dict(_opts(tmp_path, mode="rollback", image=None, check_mode=True)),
                        docker=docker).run()
    assert result["action"] == "rollback" and result["release"] == "v1" and result["previous_release"] == "v2"
    assert result["image"] == "greenlight/todo:v1"


def test_run_swap_rejects_bad_options():
    with pytest.raises(OptionsError):
        run_swap({"app_name": "todo", "image": "bad ref"})


# -- importable as plain files (server-side CLI) --------------------------------------------------
def test_engine_imports_without_ansible(tmp_path):
    package = tmp_path / "greenlight_engine"
    package.mkdir()
    for source in MODULE_UTILS.glob("*.py"):  # the package, as deploy_script copies it to a server
        (package / source.name).write_bytes(source.read_bytes())
    code = ("import sys; sys.path.insert(0, '.'); from greenlight_engine.swap import run_swap; "
            "from greenlight_engine.options import options_from_dict; from greenlight_engine import cli; "
            "assert not any(m.startswith('ansible') for m in sys.modules), 'ansible imported'; "
            "print(options_from_dict({'app_name': 'todo', 'image': 'x:1'}).lock_file)")
    output = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            check=True).stdout
    assert output.strip() == "/opt/todo/deploy.lock"
