"""The engine's own files: planted symlinks, state files, short writes, kill -9 leftovers, old images.

Run as root (like the engine on a server) most tests plant a link to a root-owned file in a
directory another uid owns and check that the file's owner, mode and content stay as they were.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import typing as t
from pathlib import Path

import pytest

from ansible_collections.greenlight.deploy.plugins.module_utils._engine import cli, cli_config, docker_api, errors, phases_finish, phases_prepare, sqlite
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.audit import append_jsonl
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.errors import UnsafePathError
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.lock import DeployLock
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.options import options_from_dict
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.sqlite import sqlite_restore, sqlite_snapshot
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.plan import Plan, make_plan
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.swap import Swap

APP_UID = 10001
ROOT = os.geteuid() == 0


@pytest.fixture
def must_be_root() -> None:
    """The engine runs as root on a server; these tests prove what root does, so they cannot pass
    (or be skipped) as another user."""
    if not ROOT:
        pytest.fail("run as root: switching the filesystem uid and chown need root (the engine's user on a server)")


needs_root = pytest.mark.usefixtures("must_be_root")


def _state(path: Path) -> tuple:
    info = os.lstat(path)
    return info.st_uid, info.st_gid, info.st_mode, path.read_bytes()


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    """A file only the engine's user may touch (root's, when run as root)."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    target = private / "shadow"
    target.write_text("root:secret-hash:19000::::::\n")
    target.chmod(0o600)
    return target


def _make_db(path: Path, rows: tuple = ("before",), wal: bool = False) -> None:
    conn = sqlite3.connect(path)
    try:
        if wal:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (x)")
        conn.executemany("INSERT INTO t VALUES (?)", [(r,) for r in rows])
        conn.commit()
    finally:
        conn.close()


def _root_database(tmp_path: Path) -> Path:
    """A database only root may read, in a directory only root may enter (the link target)."""
    other = tmp_path / "private-db"
    other.mkdir(mode=0o700)
    root_db = other / "root.sqlite3"
    _make_db(root_db, rows=("root-only",))
    root_db.chmod(0o600)
    return root_db


def _rows(path: Path) -> list:
    conn = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return [r[0] for r in conn.execute("SELECT x FROM t")]
    finally:
        conn.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> t.Iterator[Path]:
    """The app's data directory: owned (and writable) by the container uid, like on a server, in a
    directory the app may traverse (pytest's tmp_path is root's 0700)."""
    base = Path(tempfile.mkdtemp(prefix="gltest-data-"))
    base.chmod(0o711)
    data = base / "data"
    data.mkdir()
    _make_db(data / "db.sqlite3")
    if ROOT:
        for path in (data, data / "db.sqlite3"):
            os.chown(path, APP_UID, APP_UID)
    yield data
    shutil.rmtree(base)


# -- symlinks the app plants in its data directory ---------------------------------------------------
@pytest.mark.parametrize("suffix", ["-wal", "-shm", "-journal"])
def test_restore_refuses_a_planted_companion_link(tmp_path, data_dir, secret_file, suffix):
    db = data_dir / "db.sqlite3"
    snapshot = tmp_path / "backups" / "snap.sqlite3"
    sqlite_snapshot(str(db), str(snapshot))
    before = _state(secret_file)
    (data_dir / ("db.sqlite3" + suffix)).symlink_to(secret_file)
    with pytest.raises(UnsafePathError) as caught:
        sqlite_restore(str(snapshot), str(db))
    assert str(data_dir / ("db.sqlite3" + suffix)) in str(caught.value)
    assert "symbolic link" in str(caught.value)
    assert _state(secret_file) == before


@pytest.mark.parametrize("suffix", ["-wal", "-shm", "-journal"])
def test_snapshot_refuses_a_planted_companion_link(tmp_path, data_dir, secret_file, suffix):
    before = _state(secret_file)
    (data_dir / ("db.sqlite3" + suffix)).symlink_to(secret_file)
    snapshot = tmp_path / "backups" / "snap.sqlite3"
    with pytest.raises(UnsafePathError, match="db.sqlite3%s is a symbolic link" % suffix):
        sqlite_snapshot(str(data_dir / "db.sqlite3"), str(snapshot))
    assert _state(secret_file) == before
    assert not snapshot.exists() and not Path(str(snapshot) + ".partial").exists()


def test_database_itself_a_link_is_refused(tmp_path, data_dir):
    """db.sqlite3 -> another (root's) database: neither copied out nor overwritten."""
    root_db = _root_database(tmp_path)
    db = data_dir / "db.sqlite3"
    snapshot = tmp_path / "backups" / "snap.sqlite3"
    sqlite_snapshot(str(db), str(snapshot))
    db.unlink()
    db.symlink_to(root_db)
    before = _state(root_db)
    with pytest.raises(UnsafePathError, match="%s is a symbolic link" % db):
        sqlite_snapshot(str(db), str(tmp_path / "backups" / "second.sqlite3"))
    assert not (tmp_path / "backups" / "second.sqlite3").exists()
    with pytest.raises(UnsafePathError, match="%s is a symbolic link" % db):
        sqlite_restore(str(snapshot), str(db))
    assert _state(root_db) == before and _rows(root_db) == ["root-only"]


def test_backups_dir_or_snapshot_a_link_is_refused(tmp_path, data_dir, secret_file):
    db = data_dir / "db.sqlite3"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    linked = tmp_path / "linked-backups"
    linked.symlink_to(elsewhere)
    with pytest.raises(UnsafePathError, match="%s is a symbolic link" % linked):
        sqlite_snapshot(str(db), str(linked / "snap.sqlite3"))
    assert list(elsewhere.iterdir()) == []
    # A snapshot path that is a link (e.g. to another database) is not restored from.
    other = tmp_path / "other.sqlite3"
    _make_db(other, rows=("someone else's",))
    backups = tmp_path / "backups"
    backups.mkdir()
    (backups / "snap.sqlite3").symlink_to(other)
    with pytest.raises(UnsafePathError, match="snap.sqlite3 is a symbolic link"):
        sqlite_restore(str(backups / "snap.sqlite3"), str(db))
    assert _rows(db) == ["before"]
    # A link planted where the snapshot's temp file goes is replaced, never written through.
    before = _state(secret_file)
    (backups / "new.sqlite3.partial").symlink_to(secret_file)
    sqlite_snapshot(str(db), str(backups / "new.sqlite3"))
    assert _state(secret_file) == before and _rows(backups / "new.sqlite3") == ["before"]


@needs_root
@pytest.mark.parametrize("operation", ["snapshot", "restore"])
def test_a_link_planted_after_the_check_reaches_only_what_the_app_can(tmp_path, data_dir, monkeypatch,
                                                                     operation):
    """The race: the app swaps its database for a link to root's database between the check and
    SQLite's open. The database is opened with its owner's filesystem uid, so the link reaches
    nothing the app could not read or write itself."""
    root_db = _root_database(tmp_path)
    db = data_dir / "db.sqlite3"
    snapshot = tmp_path / "backups" / "snap.sqlite3"
    sqlite_snapshot(str(db), str(snapshot))
    monkeypatch.setattr(sqlite, "refuse_links", lambda *paths: os.lstat(paths[0]))  # lose the race on purpose
    os.rename(db, data_dir / "moved.sqlite3")
    db.symlink_to(root_db)
    os.lchown(db, APP_UID, APP_UID)  # the app made the link
    before = _state(root_db)
    second = tmp_path / "backups" / "second.sqlite3"
    with pytest.raises((OSError, sqlite3.Error)):
        if operation == "snapshot":
            sqlite_snapshot(str(db), str(second))
        else:
            sqlite_restore(str(snapshot), str(db))
    assert _state(root_db) == before and _rows(root_db) == ["root-only"]
    assert not second.exists()


@needs_root
def test_restore_keeps_the_app_ownership_of_a_wal_database(tmp_path, data_dir):
    data = data_dir
    db = data / "db.sqlite3"
    db.unlink()
    _make_db(db, wal=True)
    os.chown(db, APP_UID, APP_UID)
    snapshot = tmp_path / "backups" / "snap.sqlite3"
    sqlite_snapshot(str(db), str(snapshot))
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO t VALUES ('after')")
    sqlite_restore(str(snapshot), str(db))
    assert _rows(db) == ["before"]
    for path in data.iterdir():
        assert (path.stat().st_uid, path.stat().st_gid) == (APP_UID, APP_UID), path
    assert snapshot.stat().st_uid == 0 and oct(snapshot.stat().st_mode & 0o777) == "0o640"


def _lose_the_race(monkeypatch) -> None:
    """The app swaps its database for a link between the engine's check and SQLite's open."""
    monkeypatch.setattr(sqlite, "refuse_links", lambda *paths: os.lstat(paths[0]))


@needs_root
@pytest.mark.parametrize("operation", ["snapshot", "restore"])
def test_a_data_dir_the_app_closed_to_itself_is_refused(tmp_path, data_dir, monkeypatch, operation):
    """The app chmods its data directory 0600: its uid can no longer reach the database, so the
    engine would open it as plain root. It refuses instead, and creates nothing where a link points."""
    db = data_dir / "db.sqlite3"
    snapshot = tmp_path / "backups" / "snap.sqlite3"
    sqlite_snapshot(str(db), str(snapshot))
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    target = private / "created-by-root"
    db.unlink()
    db.symlink_to(target)
    os.lchown(db, APP_UID, APP_UID)
    data_dir.chmod(0o600)
    _lose_the_race(monkeypatch)
    with pytest.raises(UnsafePathError) as caught:
        if operation == "snapshot":
            sqlite_snapshot(str(db), str(tmp_path / "backups" / "second.sqlite3"))
        else:
            sqlite_restore(str(snapshot), str(db))
    message = str(caught.value)
    assert str(data_dir) in message and "must be owned by the app's uid and let it in" in message
    assert not os.path.lexists(target) and not (tmp_path / "backups" / "second.sqlite3").exists()


@needs_root
@pytest.mark.parametrize("operation", ["snapshot", "restore"])
def test_a_database_owned_by_root_is_refused(tmp_path, data_dir, operation):
    """An app running as root in its container writes a root-owned database: no uid to open it as."""
    db = data_dir / "db.sqlite3"
    snapshot = tmp_path / "backups" / "snap.sqlite3"
    sqlite_snapshot(str(db), str(snapshot))
    os.chown(db, 0, 0)
    with pytest.raises(UnsafePathError) as caught:
        if operation == "snapshot":
            sqlite_snapshot(str(db), str(tmp_path / "backups" / "second.sqlite3"))
        else:
            sqlite_restore(str(snapshot), str(db))
    message = str(caught.value)
    assert str(db) in message and "owned by root" in message
    assert "app_host_container_uid" in message and 'deploy_script_sqlite_path to ""' in message
    assert not (tmp_path / "backups" / "second.sqlite3").exists()


@needs_root
def test_a_data_dir_owned_by_root_is_refused(tmp_path, data_dir):
    os.chown(data_dir, 0, 0)
    with pytest.raises(UnsafePathError, match="must be owned by the app's uid"):
        sqlite_snapshot(str(data_dir / "db.sqlite3"), str(tmp_path / "backups" / "snap.sqlite3"))


@needs_root
def test_a_chgrp_of_the_database_does_not_widen_the_groups(tmp_path, data_dir, monkeypatch):
    """The app may chgrp its files to any group of its image (gid 0 in many): the group the engine
    opens the database with is its data directory's, so a link reaches no root-group file."""
    other = data_dir.parent / "root-group"  # reachable by others (data_dir's parent is 0711)
    other.mkdir()
    other.chmod(0o750)
    root_db = other / "root.sqlite3"
    _make_db(root_db, rows=("root-group-only",))
    root_db.chmod(0o640)
    db = data_dir / "db.sqlite3"
    db.unlink()
    db.symlink_to(root_db)
    os.lchown(db, APP_UID, 0)  # the app made the link, in group 0
    _lose_the_race(monkeypatch)
    second = tmp_path / "backups" / "second.sqlite3"
    with pytest.raises((OSError, sqlite3.Error)):
        sqlite_snapshot(str(db), str(second))
    assert not second.exists()


@needs_root
def test_a_data_dir_in_group_root_is_refused(tmp_path, data_dir):
    os.chown(data_dir, APP_UID, 0)
    with pytest.raises(UnsafePathError, match="group"):
        sqlite_snapshot(str(data_dir / "db.sqlite3"), str(tmp_path / "backups" / "snap.sqlite3"))


@needs_root
def test_no_way_to_switch_the_identity_refuses_and_restores_root(tmp_path, data_dir, monkeypatch):
    """setgroups refused (no CAP_SETGID) or no setfsuid: refused, never continued as root; the
    process's groups and filesystem ids are root's again afterwards."""
    groups = os.getgroups()
    db = str(data_dir / "db.sqlite3")

    def refuse(_groups):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(sqlite.os, "setgroups", refuse)
    with pytest.raises(UnsafePathError, match="cannot open .* as uid %d" % APP_UID):
        sqlite_snapshot(db, str(tmp_path / "backups" / "a.sqlite3"))
    monkeypatch.undo()
    assert os.getgroups() == groups

    class NoFsuid:
        def __init__(self, *args, **kwargs):
            pass

    monkeypatch.setattr(sqlite.ctypes, "CDLL", NoFsuid)
    with pytest.raises(UnsafePathError, match="setfsuid"):
        sqlite_snapshot(db, str(tmp_path / "backups" / "b.sqlite3"))
    monkeypatch.undo()
    assert os.getgroups() == groups
    (tmp_path / "after").write_text("")
    assert (tmp_path / "after").stat().st_uid == 0 and (tmp_path / "after").stat().st_gid == 0
    assert not list((tmp_path / "backups").glob("[ab].sqlite3*"))


# -- state files root writes: the lock and releases.jsonl --------------------------------------------
def test_lock_refuses_a_planted_link(tmp_path, secret_file):
    before = _state(secret_file)
    lock_path = tmp_path / "app" / "deploy.lock"
    lock_path.parent.mkdir()
    lock_path.symlink_to(secret_file)
    with pytest.raises(UnsafePathError) as caught:
        DeployLock(str(lock_path), {"pid": 1, "phase": "lock"}).acquire(1)
    assert str(lock_path) in str(caught.value) and "symbolic link" in str(caught.value)
    assert _state(secret_file) == before
    assert DeployLock.read_holder(str(lock_path)) is None  # not read through the link either


def test_releases_log_refuses_a_planted_link(tmp_path, secret_file):
    before = _state(secret_file)
    log = tmp_path / "app" / "releases.jsonl"
    log.parent.mkdir()
    log.symlink_to(secret_file)
    with pytest.raises(UnsafePathError, match="%s is a symbolic link" % log):
        append_jsonl(str(log), {"action": "deploy"})
    assert _state(secret_file) == before


def test_releases_log_refuses_a_hard_link(tmp_path, secret_file):
    before = _state(secret_file)
    log = tmp_path / "releases.jsonl"
    os.link(secret_file, log)
    with pytest.raises(UnsafePathError, match="has 2 hard links"):
        append_jsonl(str(log), {"action": "deploy"})
    assert _state(secret_file) == before


@needs_root
def test_state_file_of_a_stranger_is_refused(tmp_path):
    """Owned by neither the engine's user nor the directory's owner (who could replace it anyway)."""
    app = tmp_path / "app"
    app.mkdir()
    for name in ("releases.jsonl", "deploy.lock"):
        (app / name).write_text("")
        os.chown(app / name, APP_UID, APP_UID)
    with pytest.raises(UnsafePathError, match="releases.jsonl is owned by uid %d" % APP_UID):
        append_jsonl(str(app / "releases.jsonl"), {"action": "deploy"})
    with pytest.raises(UnsafePathError, match="deploy.lock is owned by uid %d" % APP_UID):
        DeployLock(str(app / "deploy.lock"), {}).acquire(1)
    # The directory's owner (the deploy user) may own them: it could replace them anyway.
    os.chown(app, APP_UID, APP_UID)
    append_jsonl(str(app / "releases.jsonl"), {"action": "deploy"})
    lock = DeployLock(str(app / "deploy.lock"), {"pid": 1})
    lock.acquire(1)
    lock.release()


# -- releases.jsonl: a line is whole or absent --------------------------------------------------------
def _lines(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_short_writes_are_completed(tmp_path, monkeypatch):
    log = tmp_path / "releases.jsonl"
    append_jsonl(str(log), {"n": 1})
    real_write = os.write
    calls = []

    def half_write(fd, data):
        calls.append(len(data))
        return real_write(fd, data[:max(1, len(data) // 2)])

    monkeypatch.setattr(sqlite.os, "write", half_write)
    append_jsonl(str(log), {"n": 2, "padding": "x" * 200})
    assert len(calls) > 1
    assert [line["n"] for line in _lines(log)] == [1, 2]


def test_full_disk_leaves_no_partial_line(tmp_path, monkeypatch):
    log = tmp_path / "releases.jsonl"
    append_jsonl(str(log), {"n": 1})
    size = log.stat().st_size
    real_write = os.write
    state = {"calls": 0}

    def write_then_full(fd, data):
        state["calls"] += 1
        if state["calls"] == 1:
            return real_write(fd, data[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sqlite.os, "write", write_then_full)
    with pytest.raises(OSError) as caught:
        append_jsonl(str(log), {"n": 2, "padding": "x" * 200})
    assert caught.value.errno == errno.ENOSPC and str(log) in str(caught.value)
    monkeypatch.undo()
    assert log.stat().st_size == size
    append_jsonl(str(log), {"n": 3})
    assert [line["n"] for line in _lines(log)] == [1, 3]


def test_a_torn_last_line_does_not_swallow_the_next(tmp_path):
    log = tmp_path / "releases.jsonl"
    log.write_text('{"n":1}\n{"n":2,"tor')  # written by an older version killed mid-write
    append_jsonl(str(log), {"n": 3})
    assert log.read_text().splitlines()[-1] == '{"n":3}'


@needs_root
def test_full_disk_on_a_real_tmpfs(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12k", "gltest-data-tmpfs", str(mount)], check=True)
    try:
        log = mount / "releases.jsonl"
        written = 0
        with pytest.raises(OSError) as caught:
            for number in range(1000):
                append_jsonl(str(log), {"n": number, "padding": "x" * 1500})
                written += 1
        assert caught.value.errno == errno.ENOSPC
        assert 0 < written < 1000
        assert [line["n"] for line in _lines(log)] == list(range(written))  # every line whole
    finally:
        subprocess.run(["umount", str(mount)], check=True)


# -- kill -9 leftovers and old images (a fake Docker) -------------------------------------------------
IMAGE = {n: "sha256:" + ("%02d" % n) * 32 for n in range(1, 10)}


class PruneDocker:
    """The Docker calls _prune, _cleanup and plan make, on an in-memory list of containers."""

    def __init__(self, containers, in_use_elsewhere=()):
        self.containers = containers
        self.in_use_elsewhere = set(in_use_elsewhere)
        self.removed_images = []
        self.refused_images = []

    def list_containers(self, labels=None, all=True):
        return [c for c in self.containers if all or c["State"] == "running"]

    def remove_container(self, container_id, force=True):
        self.containers = [c for c in self.containers if c["Id"] != container_id]

    def remove_image(self, image_id):
        assert image_id.startswith("sha256:")
        if image_id in self.in_use_elsewhere or any(c["ImageID"] == image_id for c in self.containers):
            self.refused_images.append(image_id)
            raise docker_api.DockerError("conflict: image is being used (HTTP 409)", status=409)
        self.removed_images.append(image_id)
        return True

    def inspect_image(self, reference):
        return {"Id": reference, "RepoDigests": []}


def _container(number, state, service="web", release=None):
    release = release or "r%d" % number
    return {"Id": "id-%s-%d" % (service, number), "Names": ["/todo-%s-%s-x" % (service, release)], "State": state,
            "ImageID": IMAGE[number], "Created": number,
            "Labels": {"greenlight.app": "todo", "greenlight.release": release, "greenlight.service": service,
                       "greenlight.port": "8001" if number % 2 else "8002",
                       "greenlight.image": "todo:%s" % release}}


def _swap_for(tmp_path, docker, **extra):
    values = {"app_name": "todo", "image": "todo:r9", "app_dir": str(tmp_path / "app"),
              "upstream_file": str(tmp_path / "upstream.conf")}
    values.update(extra)
    return Swap(options_from_dict(values), docker=docker)


def test_prune_removes_partial_snapshots(tmp_path):
    backups = tmp_path / "app" / "backups"
    backups.mkdir(parents=True)
    names = ["todo-20260101T000000000000Z-before-r1.sqlite3", "todo-20260102T000000000000Z-before-r2.sqlite3",
             "todo-20260103T000000000000Z-before-r3.sqlite3.partial",
             "todo-20260103T000000000000Z-before-r3.sqlite3.partial-journal", "other-app.sqlite3.partial"]
    for name in names:
        (backups / name).write_text("x")
    swap = _swap_for(tmp_path, PruneDocker([]), sqlite_path=str(tmp_path / "db.sqlite3"))
    pruned = phases_finish.prune(swap.ctx, None, "r9")
    assert sorted(p.name for p in backups.iterdir()) == sorted(names[:2] + ["other-app.sqlite3.partial"])
    assert set(names[2:4]) <= set(pruned)


def test_prune_refuses_a_linked_backups_dir(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for number in range(8):
        (elsewhere / ("todo-2026010%dT000000000000Z-before-r.sqlite3" % number)).write_text("x")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "backups").symlink_to(elsewhere)
    swap = _swap_for(tmp_path, PruneDocker([]), sqlite_path=str(tmp_path / "db.sqlite3"))
    with pytest.raises(UnsafePathError, match="backups is a symbolic link"):
        phases_finish.prune(swap.ctx, None, "r9")
    assert len(list(elsewhere.iterdir())) == 8


def test_created_container_is_never_a_rollback_target(tmp_path):
    """Killed between create and start: the newest container never ran, so it proves nothing."""
    (tmp_path / "upstream.conf").write_text("server 127.0.0.1:8001;\n")
    containers = [_container(1, "exited", release="r1"), _container(3, "running", release="r3"),
                  _container(2, "created", release="r2")]
    containers[1]["Labels"]["greenlight.port"] = "8001"
    swap = _swap_for(tmp_path, PruneDocker(containers), mode="rollback", image=None)
    plan = make_plan(swap.ctx)
    assert plan.release == "r1"
    with pytest.raises(errors.SwapError, match="no kept release r2"):
        make_plan(_swap_for(tmp_path, PruneDocker(containers), mode="rollback", image=None, rollback_release="r2").ctx)


def test_prune_and_cleanup_remove_created_containers(tmp_path):
    containers = [_container(1, "exited"), _container(2, "created"), _container(3, "running")]
    docker = PruneDocker(containers)
    swap = _swap_for(tmp_path, docker)
    phases_finish.prune(swap.ctx, "id-web-3", "r3")
    assert [c["Id"] for c in docker.containers] == ["id-web-1", "id-web-3"]
    docker = PruneDocker([_container(1, "exited"), _container(2, "created"), _container(3, "running")])
    swap = _swap_for(tmp_path, docker)
    cleaned = phases_prepare.cleanup(swap.ctx, Plan(others=[], live=None, upstream_port=None))
    assert cleaned == ["todo-web-r2-x"] and [c["Id"] for c in docker.containers] == ["id-web-1", "id-web-3"]


def test_prune_removes_images_no_kept_release_uses(tmp_path):
    # r1..r6 stopped, r7 live; releases_to_keep 3 keeps r4..r6 (and their images).
    containers = [_container(n, "exited") for n in range(1, 7)] + [_container(7, "running")]
    containers.append(_container(3, "exited", service="worker"))  # still used by a kept container: kept
    docker = PruneDocker(containers, in_use_elsewhere={IMAGE[2]})  # e.g. another app's container
    swap = _swap_for(tmp_path, docker, releases_to_keep=3)
    phases_finish.prune(swap.ctx, "id-web-7", "r7")
    assert docker.removed_images == [IMAGE[1]]
    assert IMAGE[2] in docker.refused_images  # Docker said in use: left alone, not an error
    assert swap.ctx.result["pruned_images"] == [IMAGE[1]]
    assert sorted(c["ImageID"] for c in docker.containers if c["Labels"]["greenlight.service"] == "web") == \
        [IMAGE[4], IMAGE[5], IMAGE[6], IMAGE[7]]


def test_prune_never_removes_the_live_or_a_kept_image(tmp_path):
    """Two releases of one image: removing the older container must not remove the image."""
    containers = [_container(1, "exited", release="a"), _container(2, "exited", release="b"),
                  _container(3, "running", release="c")]
    containers[0]["ImageID"] = containers[1]["ImageID"] = containers[2]["ImageID"] = IMAGE[5]
    docker = PruneDocker(containers)
    swap = _swap_for(tmp_path, docker, releases_to_keep=1)
    phases_finish.prune(swap.ctx, "id-web-3", "c")
    assert docker.removed_images == [] and docker.refused_images == []
    assert swap.ctx.result["pruned_images"] == []


# -- deploy.sh restore-database: the snapshot named in releases.jsonl ---------------------------------
def test_restore_database_only_from_the_backups_dir(tmp_path, data_dir, monkeypatch):
    """releases.jsonl is writable by the deploy user: a record naming another database (another
    app's, root's) must not make root copy it into this app's database."""
    import argparse

    app_dir = data_dir.parent
    db = data_dir / "db.sqlite3"
    db.unlink()
    _make_db(db, rows=("mine",))
    if ROOT:
        os.chown(db, APP_UID, APP_UID)
    other = tmp_path / "other-app.sqlite3"
    _make_db(other, rows=("another app's data",))
    config = {"swap": {"app_name": "todo", "app_dir": str(app_dir), "sqlite_path": str(db),
                       "upstream_file": str(tmp_path / "upstream.conf")}}
    monkeypatch.setattr(cli, "live_release_of", lambda opts: "v1")
    record = {"result": "ok", "release": "v2", "previous_release": "v1", "snapshot": str(other)}
    append_jsonl(str(app_dir / "releases.jsonl"), record)
    args = argparse.Namespace(check=False, json=False, actor=None)
    with pytest.raises(cli_config.CliError, match="not a (snapshot|file of the backup directory) %s" % (app_dir / "backups")):
        cli._restore(config, "v1", args)
    assert _rows(db) == ["mine"]
    # A real snapshot in backups_dir is restored.
    snapshot = app_dir / "backups" / "todo-20260101T000000000000Z-before-v2.sqlite3"
    sqlite_snapshot(str(db), str(snapshot))
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO t VALUES ('written by v2')")
    append_jsonl(str(app_dir / "releases.jsonl"), dict(record, snapshot=str(snapshot)))
    assert cli._restore(config, "v1", args) == 0
    assert _rows(db) == ["mine"]


def test_deploy_sh_reads_releases_log_never_through_a_link(tmp_path, secret_file):
    """`deploy.sh status` runs as root and prints records: not those of a file a link names."""
    
    secret_file.write_text('{"result": "ok", "release": "root-only-record"}\n')
    log = tmp_path / "releases.jsonl"
    log.symlink_to(secret_file)
    with pytest.raises(cli_config.CliError, match="%s is a symbolic link" % log):
        cli_config.read_records(str(log))
    log.unlink()
    append_jsonl(str(log), {"result": "ok", "release": "v1"})
    assert [r["release"] for r in cli_config.read_records(str(log))] == ["v1"]


@needs_root
def test_server_layout_app_reaches_its_data_through_the_deploy_group(tmp_path, monkeypatch):
    """As app_host lays it out: <app_dir> root:deploy 0750 (the app uid is not in the deploy
    group), data/ app:deploy 0750. The engine opens the database as the app with the deploy group
    for traversal only: snapshot and restore work, and a link swapped in is still not followed."""
    deploy_uid = APP_UID + 1
    groups = os.getgroups()
    base = Path(tempfile.mkdtemp(prefix="gltest-data-"))
    try:
        base.chmod(0o755)
        app_dir = base / "opt" / "todo"
        data = app_dir / "data"
        data.mkdir(parents=True)
        (base / "opt").chmod(0o755)
        os.chown(app_dir, 0, deploy_uid)
        app_dir.chmod(0o750)
        os.chown(data, APP_UID, deploy_uid)
        data.chmod(0o750)
        db = data / "db.sqlite3"
        _make_db(db, wal=True)
        os.chown(db, APP_UID, APP_UID)
        assert sqlite.traverse_groups(str(data), APP_UID) == [deploy_uid]
        snapshot = tmp_path / "backups" / "snap.sqlite3"
        sqlite_snapshot(str(db), str(snapshot))
        with sqlite3.connect(db) as conn:
            conn.execute("INSERT INTO t VALUES ('after')")
        sqlite_restore(str(snapshot), str(db))
        assert _rows(db) == ["before"]
        assert {(p.stat().st_uid, p.stat().st_gid) for p in data.iterdir()} == {(APP_UID, APP_UID)}
        assert os.getgroups() == groups  # and files are created as root again:
        (tmp_path / "after").write_text("")
        assert (tmp_path / "after").stat().st_uid == 0

        root_db = _root_database(tmp_path)
        monkeypatch.setattr(sqlite, "refuse_links", lambda *paths: os.lstat(paths[0]))
        for path in data.iterdir():
            path.unlink()
        db.symlink_to(root_db)
        os.lchown(db, APP_UID, APP_UID)
        before = _state(root_db)
        with pytest.raises((OSError, sqlite3.Error)):
            sqlite_restore(str(snapshot), str(db))
        assert _state(root_db) == before and _rows(root_db) == ["root-only"]
    finally:
        shutil.rmtree(base)


def test_snapshot_temp_file_swapped_for_a_link_is_not_written(tmp_path, data_dir, secret_file, monkeypatch):
    """Someone who can write backups_dir (the deploy user, before app_host made it root's): a link
    swapped in for the temp file just before SQLite opens it is detected and nothing is written
    through it (an empty file: SQLite would fill it)."""
    secret_file.write_bytes(b"")
    before = _state(secret_file)
    backups = tmp_path / "backups"
    real_connect = sqlite3.connect

    def swapping_connect(database, *args, **kwargs):
        if str(database).endswith(".partial"):
            os.unlink(database)
            os.symlink(secret_file, database)
        return real_connect(database, *args, **kwargs)

    monkeypatch.setattr(sqlite.sqlite3, "connect", swapping_connect)
    with pytest.raises(UnsafePathError, match="was replaced"):
        sqlite_snapshot(str(data_dir / "db.sqlite3"), str(backups / "snap.sqlite3"))
    monkeypatch.undo()
    assert _state(secret_file) == before
    assert list(backups.iterdir()) == []


# -- the env file: read as root, in a directory the deploy user may write ----------------------------
def _env_swap(env_file: Path) -> Swap:
    return Swap(options_from_dict({"app_name": "todo", "image": "greenlight/todo:v1",
                                         "app_dir": str(env_file.parent), "env_file": str(env_file),
                                         "upstream_file": str(env_file.parent / "upstream.conf"),
                                         "host_ports": [18001, 18002]}), docker=object())


def test_env_file_a_link_is_refused(tmp_path, secret_file):
    app = tmp_path / "app"
    app.mkdir()
    (app / "todo.env").symlink_to(secret_file)
    with pytest.raises(errors.SwapError, match="env_file %s is a symbolic link" % (app / "todo.env")):
        _env_swap(app / "todo.env").ctx.read_env()


def test_env_file_a_fifo_is_refused_at_once(tmp_path):
    """A FIFO would block the run forever while it holds the deploy lock."""
    app = tmp_path / "app"
    app.mkdir()
    os.mkfifo(app / "todo.env")
    outcome: dict[str, t.Any] = {}

    def read() -> None:
        try:
            _env_swap(app / "todo.env").ctx.read_env()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = exc

    import threading

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(5)
    if reader.is_alive():  # unblock the reader so the test run can end
        with open(os.open(app / "todo.env", os.O_WRONLY | os.O_NONBLOCK), "w"):
            pass
        pytest.fail("reading a FIFO env_file blocked")
    assert isinstance(outcome.get("error"), errors.SwapError), outcome
    assert "env_file %s is not a regular file" % (app / "todo.env") in str(outcome["error"])


def test_env_file_a_hard_link_is_refused(tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    other = tmp_path / "other.env"
    other.write_text("A=1\n")
    os.link(other, app / "todo.env")
    with pytest.raises(errors.SwapError, match="hard links"):
        _env_swap(app / "todo.env").ctx.read_env()


@needs_root
def test_env_file_owned_by_the_deploy_user_is_read(tmp_path):
    """app_env writes it owned by the deploy user, in <app_dir> owned by the deploy user or by root
    (then only root could have put it there): both are read. A stranger's file in a directory
    others may write is refused."""
    deploy_uid = APP_UID + 1
    app = tmp_path / "app"
    app.mkdir(mode=0o750)
    env_file = app / "todo.env"
    env_file.write_text("A=1\nB=two\n")
    os.chown(env_file, deploy_uid, deploy_uid)
    swap = _env_swap(env_file)
    swap.ctx.read_env()  # root's 0750 directory
    assert swap.ctx.env == ["A=1", "B=two"]
    os.chown(app, deploy_uid, deploy_uid)
    swap.ctx.read_env()  # the deploy user's directory
    assert swap.ctx.env == ["A=1", "B=two"]
    os.chown(app, 0, 0)
    app.chmod(0o1777)
    with pytest.raises(errors.SwapError, match="owned by uid %d" % deploy_uid):
        swap.ctx.read_env()
