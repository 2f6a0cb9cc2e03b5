"""Paths root writes or mounts, which a user who could once write their directory may have
replaced with symbolic links: the static root root extracts into, the host side of bind mounts,
the env file root reads. The engine never writes, mounts or reads through such a link.

(app_host makes these directories root's, so the deploy user cannot plant links there any more;
these tests are the engine's own defence, for a server not yet converged or a link planted by
anyone else.)
"""

from __future__ import annotations

import json
import os
import typing as t
from pathlib import Path

import pytest
from tarballs import make_tar

from ansible_collections.greenlight.deploy.plugins.module_utils._engine import paths
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.errors import SwapError, UnsafePathError
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.options import options_from_dict
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.static import extract_static
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.swap import Swap

DEPLOY_UID = 10001
IMAGE_ID = "sha256:" + "ab" * 32




@pytest.fixture
def private(tmp_path: Path) -> Path:
    """A directory only its owner (root, on a server) may touch, with one file in it."""
    directory = tmp_path / "private"
    directory.mkdir(mode=0o700)
    (directory / "shadow").write_text("root:secret-hash:19000::::::\n")
    (directory / "shadow").chmod(0o600)
    return directory


def _snapshot(directory: Path) -> dict[str, tuple]:
    return {p.name: (p.stat().st_mode, p.read_bytes()) for p in directory.iterdir()}


# -- static files ---------------------------------------------------------------------------------
def test_extract_static_refuses_a_linked_directory_and_writes_nothing_through_it(tmp_path, private):
    root = tmp_path / "static"
    root.mkdir()
    (root / "lists").symlink_to(private)
    before = _snapshot(private)
    stream = make_tar([("static", None), ("static/lists", None), ("static/lists/style.css", b"body{}"),
                   ("static/lists/shadow", b"pwned")])
    with pytest.raises(UnsafePathError, match=r"static/lists is a symbolic link"):
        extract_static(stream, "/app/static", str(root))
    assert _snapshot(private) == before
    assert (root / "lists").is_symlink()  # refused, left for a person to look at


def test_extract_static_refuses_a_link_deeper_down(tmp_path, private):
    root = tmp_path / "static"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "c").symlink_to(private)
    before = _snapshot(private)
    stream = make_tar([("static/a/b/c/d/new.css", b"x")])  # no directory entries: created on the way
    with pytest.raises(UnsafePathError, match=r"static/a/b/c is a symbolic link"):
        extract_static(stream, "/app/static", str(root))
    assert _snapshot(private) == before and not (private / "d").exists()


def test_extract_static_refuses_a_linked_static_root(tmp_path, private):
    (tmp_path / "static").symlink_to(private)
    before = _snapshot(private)
    with pytest.raises(UnsafePathError, match=r"static is a symbolic link"):
        extract_static(make_tar([("static/shadow", b"pwned"), ("static/new.css", b"x")]), "/app/static",
                       str(tmp_path / "static"))
    assert _snapshot(private) == before


def test_extract_static_replaces_a_linked_file_name_never_writing_through_it(tmp_path, private):
    root = tmp_path / "static"
    root.mkdir()
    (root / "app.css").symlink_to(private / "shadow")
    (root / "same.css").symlink_to(private / "shadow")
    before = _snapshot(private)
    shadow = (private / "shadow").read_bytes()
    # same.css carries the link target's content: a read through the link would call it unchanged.
    counts = extract_static(make_tar([("static/app.css", b"body{}"), ("static/same.css", shadow)]), "/app/static",
                            str(root))
    assert _snapshot(private) == before
    assert not (root / "app.css").is_symlink() and (root / "app.css").read_bytes() == b"body{}"
    assert not (root / "same.css").is_symlink() and (root / "same.css").read_bytes() == shadow
    assert counts == {"added": 0, "updated": 2, "unchanged": 0, "skipped": 0}
    assert oct((root / "app.css").stat().st_mode & 0o777) == "0o644"
    assert not [p for p in root.iterdir() if p.name.startswith(".greenlight-")]


def test_extract_static_creates_the_static_root_and_keeps_older_files(tmp_path):
    root = tmp_path / "www" / "todo" / "static"
    counts = extract_static(make_tar([("static", None), ("static/css", None), ("static/css/app.css", b"a")]),
                            "/app/static", str(root))
    assert counts == {"added": 1, "updated": 0, "unchanged": 0, "skipped": 0}
    (root / "old.css").write_text("kept")
    counts = extract_static(make_tar([("static/css/app.css", b"a"), ("static/css/new.css", b"n")]), "/app/static",
                            str(root))
    assert counts == {"added": 1, "updated": 0, "unchanged": 1, "skipped": 0}
    assert (root / "old.css").read_text() == "kept" and (root / "css" / "new.css").read_bytes() == b"n"


def test_extract_static_follows_links_above_the_static_root(tmp_path):
    """Only what is under the static root is refused: /var/www may be a link on a host, set up by root."""
    real = tmp_path / "real-www"
    real.mkdir()
    (tmp_path / "www").symlink_to(real)
    counts = extract_static(make_tar([("static/app.css", b"x")]), "/app/static", str(tmp_path / "www" / "static"))
    assert counts["added"] == 1 and (real / "static" / "app.css").read_bytes() == b"x"


# -- bind mounts ----------------------------------------------------------------------------------
def _deploy_owned(directory: Path) -> Path:
    """A directory another user (the deploy user, uid 10001 here) owns, as /opt/<app> was."""
    directory.mkdir()
    os.chown(directory, DEPLOY_UID, DEPLOY_UID)
    return directory


def _plant(link: Path, target: Path) -> None:
    """A link its directory's owner planted (owned by that user, not root)."""
    link.symlink_to(target)
    owner = link.parent.stat()
    os.lchown(link, owner.st_uid, owner.st_gid)


def test_check_mount_sources_refuses_a_linked_host_path_naming_the_mount(tmp_path, private):
    app = _deploy_owned(tmp_path / "app")
    _plant(app / "data", private)
    mount = "%s:/data" % (app / "data")
    with pytest.raises(UnsafePathError) as caught:
        paths.check_mount_sources([mount])
    assert mount in str(caught.value) and "symbolic link" in str(caught.value)


def test_check_mount_sources_refuses_a_linked_parent(tmp_path, private):
    (private / "data").mkdir()
    opt = _deploy_owned(tmp_path / "opt")
    _plant(opt / "app", private)
    with pytest.raises(UnsafePathError, match="symbolic link %s " % (opt / "app")):
        paths.check_mount_sources(["%s/data:/data:rw" % (opt / "app")])


def test_check_mount_sources_refuses_roots_link_in_a_directory_others_may_write(tmp_path, private):
    """Owned by root, but in a directory the deploy user may write: it could be replaced."""
    app = _deploy_owned(tmp_path / "app")
    (app / "data").symlink_to(private)
    assert (app / "data").lstat().st_uid == 0
    with pytest.raises(UnsafePathError, match="symbolic link"):
        paths.check_mount_sources(["%s:/data" % (app / "data")])


def test_check_mount_sources_accepts_roots_own_links(tmp_path):
    """/var/run -> /run, /etc/localtime -> zoneinfo, /opt on another disk: links only root
    controls (root's, in root's directories nobody else writes) are mounted as before."""
    disk = tmp_path / "disk"
    (disk / "app" / "data").mkdir(parents=True)
    etc = tmp_path / "etc"
    etc.mkdir(mode=0o755)
    (etc / "opt").symlink_to(disk)
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    (sticky / "zone").symlink_to(disk)
    paths.check_mount_sources(["%s/app/data:/data" % (etc / "opt"), "%s/app/data:/z:ro" % (sticky / "zone")])


def test_check_mount_sources_accepts_real_paths_missing_paths_and_volumes(tmp_path):
    (tmp_path / "data").mkdir()
    paths.check_mount_sources(["%s/data:/data" % tmp_path, "%s/not-yet/:/x:ro" % tmp_path, "todo-volume:/v",
                         "%s//data/./:/y" % tmp_path])


class RecordingDocker:
    """A Docker for a real-mode swap that records what it is asked to create."""

    def __init__(self) -> None:
        self.created: list[dict[str, t.Any]] = []

    def inspect_image(self, reference):
        return {"Id": IMAGE_ID, "RepoDigests": []}

    def list_containers(self, labels=None, all=True):
        return []

    def create_container(self, name, config):
        self.created.append(config)
        return "c%d" % len(self.created)

    def __getattr__(self, name):
        raise AssertionError("no container may be started, got %s" % name)


def test_swap_refuses_a_linked_mount_source_before_any_container(tmp_path, private):
    app = tmp_path / "app"
    app.mkdir()
    planted = _deploy_owned(tmp_path / "planted")
    _plant(planted / "data", private)
    (app / "data").symlink_to(planted / "data")
    upstream = tmp_path / "upstream.conf"
    upstream.write_text("server 127.0.0.1:8099;\n")
    options = {"app_name": "todo", "image": "greenlight/todo:v1", "app_dir": str(app),
               "upstream_file": str(upstream), "mounts": ["%s:/data" % (app / "data")],
               "pre_switch_commands": ["migrate"], "static_source": "/app/static",
               "static_root": str(tmp_path / "static")}
    docker = RecordingDocker()
    with pytest.raises(SwapError) as caught:
        Swap(options_from_dict(options), docker=docker).run()
    assert docker.created == []
    assert "%s:/data" % (app / "data") in str(caught.value)
    record = json.loads((app / "releases.jsonl").read_text().splitlines()[-1])
    assert record["result"] == "failed" and "symbolic link" in record["error"]



def test_a_dangling_database_link_is_refused_not_skipped(tmp_path, private):
    """db.sqlite3 replaced by a link to a file that does not exist (yet): the snapshot refuses it
    before the migrations, instead of skipping the snapshot as if there were no database."""
    app = tmp_path / "app"
    data = _deploy_owned(tmp_path / "data")
    _plant(data / "db.sqlite3", private / "not-there.sqlite3")
    upstream = tmp_path / "upstream.conf"
    upstream.write_text("server 127.0.0.1:8099;\n")
    options = {"app_name": "todo", "image": "greenlight/todo:v1", "app_dir": str(app),
               "upstream_file": str(upstream), "sqlite_path": str(data / "db.sqlite3"),
               "pre_switch_commands": ["migrate"]}
    docker = RecordingDocker()
    with pytest.raises(SwapError, match="symbolic link") as caught:
        Swap(options_from_dict(options), docker=docker).run()
    assert caught.value.result["failed_phase"] == "snapshot"
    assert docker.created == [] and not (private / "not-there.sqlite3").exists()


def test_an_env_file_of_gigabytes_is_refused_without_reading_it(tmp_path):
    env = tmp_path / "todo.env"
    with open(env, "wb") as handle:
        handle.truncate(5 * 1024 ** 3)  # sparse: costs no disk
    env.chmod(0o600)
    upstream = tmp_path / "upstream.conf"
    upstream.write_text("server 127.0.0.1:8099;\n")
    options = {"app_name": "todo", "image": "greenlight/todo:v1", "app_dir": str(tmp_path / "app"),
               "upstream_file": str(upstream), "env_file": str(env), "check_mode": True}
    with pytest.raises(SwapError, match="todo.env is %d bytes" % (5 * 1024 ** 3)):
        Swap(options_from_dict(options), docker=RecordingDocker()).run()
