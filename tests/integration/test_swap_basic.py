"""Deploy, zero downtime, failed health, failed migration, idempotence and check mode."""

from __future__ import annotations

import sqlite3
import time

import pytest

from conftest import LoadGenerator, image, lock_is_free, require_images, run_module

from ansible_collections.greenlight.deploy.plugins.module_utils._engine.errors import SwapError
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.swap import run_swap

pytestmark = pytest.mark.docker


def add_row(db_path, name: str) -> None:
    """Write a row the way the app would (the app's own table)."""
    with sqlite3.connect(db_path, timeout=20) as conn:
        conn.execute("INSERT INTO lists_list (name, created) VALUES (?, datetime('now'))", (name,))


def list_names(db_path) -> list[str]:
    conn = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True)
    try:
        return [row[0] for row in conn.execute("SELECT name FROM lists_list ORDER BY id")]
    finally:
        conn.close()


def table_columns(db_path, table: str) -> list[str]:
    conn = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True)
    try:
        return [row[1] for row in conn.execute("PRAGMA table_info(%s)" % table)]
    finally:
        conn.close()


def test_deploy_module_check_idempotent_then_v2_under_load(app_host, nginx):
    """Tests 1 and 4 through ansible: check mode, deploy v1, identical re-run, v2 under load."""
    require_images("v1", "v2")
    options = app_host.options(image=image("v1"))

    # Check mode on an empty server: predicts a deploy, touches nothing.
    before = nginx.upstream_file.read_text()
    predicted = run_module(options, check=True, diff=True)
    assert predicted["_rc"] == 0, predicted
    assert predicted["changed"] is True and predicted["swap_action"] == "deploy"
    assert predicted["diff"]["after"]["release"] == "v1"
    assert app_host.containers() == []
    assert nginx.upstream_file.read_text() == before
    assert not app_host.releases_log.exists() and not app_host.lock_file.exists()

    first = run_module(options, diff=True)
    assert first["_rc"] == 0, first.get("msg")
    assert first["changed"] is True and first["release"] == "v1" and first["previous_release"] is None
    assert first["live_port"] == app_host.host_ports[0] == nginx.upstream_port()
    assert nginx.get("/health") == (200, "v1")
    assert nginx.get("/static/lists/style.css")[0] == 200
    assert set(first["phases"]) >= {"plan", "lock", "snapshot", "pre_switch", "static", "start", "health", "switch"}
    assert first["diff"]["before"]["release"] is None and first["diff"]["after"]["release"] == "v1"

    # Identical re-deploy: changed=false, same container, nothing appended.
    log_before = app_host.releases_log.read_text()
    again = run_module(options)
    assert again["_rc"] == 0 and again["changed"] is False, again
    assert again["container_id"] == first["container_id"]
    assert app_host.releases_log.read_text() == log_before

    # Check mode for v2: predicts, changes nothing (containers, upstream, releases.jsonl).
    v2_options = app_host.options(image=image("v2"))
    containers = sorted((c["Id"], c["State"]) for c in app_host.containers())
    upstream = nginx.upstream_file.read_text()
    predicted = run_module(v2_options, check=True, diff=True)
    assert predicted["_rc"] == 0 and predicted["changed"] is True, predicted
    assert predicted["diff"]["before"]["release"] == "v1" and predicted["diff"]["after"]["release"] == "v2"
    assert predicted["diff"]["after"]["port"] == app_host.host_ports[1]
    assert sorted((c["Id"], c["State"]) for c in app_host.containers()) == containers
    assert nginx.upstream_file.read_text() == upstream
    assert app_host.releases_log.read_text() == log_before

    # Deploy v2 under load: no failed request, and after the switch only v2 answers.
    load = LoadGenerator(nginx.port).start()
    time.sleep(1.0)
    second = run_module(v2_options)
    switched_at = time.monotonic()
    time.sleep(1.0)
    load.stop()
    summary = load.summary()
    print("load during v1->v2:", summary, "phases:", second.get("phases"))
    assert second["_rc"] == 0, second.get("msg")
    assert second["release"] == "v2" and second["previous_release"] == "v1"
    assert load.failures == [], summary
    after = [r for r in load.results if r[0] > switched_at]
    assert after and all(r[2] == "v2" for r in after), summary
    assert summary["by_release"].get("v1", 0) > 0 and summary["by_release"].get("v2", 0) > 0
    assert nginx.upstream_port() == app_host.host_ports[1]
    # The old container is kept stopped for rollback; only the new one runs (once the background
    # stop of the old release, which holds the deploy lock until it is done, has ended).
    deadline = time.monotonic() + 30
    while not lock_is_free(app_host.lock_file) and time.monotonic() < deadline:
        time.sleep(0.05)
    running = app_host.running_web()
    assert [c["Id"] for c in running] == [second["container_id"]]
    lines = app_host.audit_lines()
    assert [line["release"] for line in lines] == ["v1", "v2"]
    assert lines[-1]["result"] == "ok" and lines[-1]["previous_release"] == "v1"


def test_bad_health_keeps_v1_serving(app_host, nginx):
    """Test 2: the new release never gets healthy."""
    require_images("v1", "bad-health")
    first = run_swap(app_host.options(image=image("v1")))
    nginx.wait_release("v1")
    load = LoadGenerator(nginx.port, threads=4).start()
    with pytest.raises(SwapError) as caught:
        run_swap(app_host.options(image=image("bad-health"), health_timeout=4))
    load.stop()
    message = str(caught.value)
    assert "phase health" in message and "the previous release v1 is still serving" in message
    assert "last log lines" in message
    assert load.failures == [] and load.summary()["by_release"].keys() == {"v1"}
    assert nginx.get("/health") == (200, "v1")
    assert [c["Id"] for c in app_host.running_web()] == [first["container_id"]]
    assert not any(c["Labels"]["greenlight.release"] == "bad-health" for c in app_host.containers())
    line = app_host.audit_lines()[-1]
    assert line["result"] == "failed" and line["failed_phase"] == "health" and line["release"] == "bad-health"
    assert not _lock_held(app_host.lock_file)


def test_bad_migration_restores_database(app_host, nginx):
    """Test 3: migration fails half-way; v1 keeps serving with the database as it was."""
    require_images("v1", "bad-migration")
    run_swap(app_host.options(image=image("v1")))
    add_row(app_host.db_path, "written under v1")
    names = list_names(app_host.db_path)
    columns = table_columns(app_host.db_path, "lists_item")
    with pytest.raises(SwapError) as caught:
        run_swap(app_host.options(image=image("bad-migration")))
    message = str(caught.value)
    assert "phase pre_switch" in message and "exited" in message and "bad-migration variant" in message
    assert "restored the database" in message and "the previous release v1 is still serving" in message
    assert nginx.get("/health") == (200, "v1")
    assert nginx.get("/")[0] == 200
    assert list_names(app_host.db_path) == names
    assert table_columns(app_host.db_path, "lists_item") == columns
    line = app_host.audit_lines()[-1]
    assert line["failed_phase"] == "pre_switch" and line["snapshot"]
    conn = sqlite3.connect(line["snapshot"])
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert "written under v1" in [row[0] for row in conn.execute("SELECT name FROM lists_list")]
    finally:
        conn.close()
    assert not any(c["Labels"]["greenlight.release"] == "bad-migration" for c in app_host.containers())


def _lock_held(path) -> bool:
    import fcntl

    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def test_module_failure_reports_message_and_partial_result(app_host, nginx):
    """The module's one fail_json path: a useful message, rc != 0, the partial result, the audit line."""
    require_images("v1", "bad-health")
    first = run_module(app_host.options(image=image("v1")))
    assert first["_rc"] == 0, first.get("msg")
    failed = run_module(app_host.options(image=image("bad-health"), health_timeout=3), diff=True)
    assert failed["_rc"] != 0 and failed["failed"] is True
    assert failed["failed_phase"] == "health" and failed["swap_action"] == "deploy"
    assert "the previous release v1 is still serving" in failed["msg"]
    assert failed["previous_release"] == "v1" and failed["container_id"] == first["container_id"]
    assert nginx.get("/health") == (200, "v1")
    assert app_host.audit_lines()[-1]["failed_phase"] == "health"
    missing = run_module(app_host.options(image="greenlight/todo:does-not-exist"))
    assert missing["_rc"] != 0 and missing["failed_phase"] == "plan"
    assert "pull it first" in missing["msg"] and "nothing was changed" in missing["msg"]
    assert app_host.audit_lines()[-1]["failed_phase"] == "plan"
    invalid = run_module(app_host.options(image="Not A Reference"))
    assert invalid["_rc"] != 0 and "not a valid image reference" in invalid["msg"]
