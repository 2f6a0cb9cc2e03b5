# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""SQLite snapshots and restores, done as the database's owner (never through the app's links)."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import sqlite3
import stat
import typing as t

from .errors import UnsafePathError
from .paths import refuse_linked_dir, refuse_links


def traverse_groups(directory: str, uid: int) -> t.Optional[list[int]]:
    """The groups uid needs to reach `directory` (e.g. the deploy group for /opt/<app>), or None
    when it cannot reach it at all."""
    groups = set()
    path = os.path.realpath(directory)
    while True:
        info = os.stat(path)
        if not (info.st_mode & (stat.S_IXUSR if info.st_uid == uid else stat.S_IXOTH)):
            if info.st_uid == uid or not info.st_mode & stat.S_IXGRP:
                return None
            groups.add(info.st_gid)
        if path == os.path.dirname(path):
            return sorted(groups)
        path = os.path.dirname(path)


@contextlib.contextmanager
def _filesystem_identity(db_path: str, db_owner: os.stat_result) -> t.Iterator[None]:
    """Open the database's files as the owner of its directory (setfsuid/setfsgid: this thread
    only; supplementary groups only those needed to reach the directory). A link the app plants in
    its own directory, even after the checks, then reaches only what the app could reach itself.
    The directory's uid and gid, not the file's: the app can chgrp its file to any group of its
    image. Fails closed (UnsafePathError naming the path and the cause) whenever that identity
    cannot be taken; never goes on as root. A no-op when this process is not root."""
    directory = os.path.dirname(os.path.abspath(db_path))
    if os.geteuid() != 0:
        yield  # not root: the files are opened with no more than this user's rights anyway
        return
    refuse_linked_dir(directory)
    info = os.stat(directory)
    uid, gid = info.st_uid, info.st_gid
    if db_owner.st_uid == 0:
        raise UnsafePathError(
            "%s is owned by root: a database owned by root (an app running as root in its container) cannot be "
            "snapshotted or restored safely, since root would open it through any link the app plants. Run the app "
            "as a non-root uid (app_host_container_uid) and chown the database to it, or set "
            "deploy_script_sqlite_path to \"\" (container_swap: sqlite_path) to skip snapshots" % db_path)
    if uid == 0:
        raise UnsafePathError(
            "the data directory %s is owned by root: the data directory must be owned by the app's uid and let it "
            "in (app_host lays it out so: owner app_host_container_uid, mode 0750); chown it and re-run" % directory)
    if gid == 0:
        raise UnsafePathError(
            "the data directory %s is in group root (gid 0): the database would be opened with root's group. "
            "chgrp it back to the deploy group (as app_host lays it out) and re-run" % directory)
    reach = traverse_groups(directory, uid)
    if reach is None:
        raise UnsafePathError(
            "uid %d cannot reach its data directory %s (mode %04o): the data directory must be owned by the app's "
            "uid and let it in (owner app_host_container_uid, mode 0750), and every directory above it must let "
            "it through; refusing to open the database as root. chmod 0750 %s (or re-run playbooks/setup.yml) "
            "and re-run" % (uid, directory, stat.S_IMODE(info.st_mode), directory))
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "setfsuid") or not hasattr(libc, "setfsgid"):
        raise UnsafePathError("cannot open %s as its directory's owner (uid %d): this C library has no "
                              "setfsuid/setfsgid; refusing to open it as root" % (db_path, uid))
    groups = os.getgroups()
    groups_changed = False
    try:
        try:
            os.setgroups(reach)
        except PermissionError as exc:  # no CAP_SETGID (a restricted container)
            raise UnsafePathError("cannot open %s as uid %d: setgroups refused (%s; the engine needs CAP_SETGID); "
                                  "refusing to open it as root" % (db_path, uid, exc.strerror)) from None
        groups_changed = True
        libc.setfsgid(gid)
        libc.setfsuid(uid)
        # An invalid id (-1) changes nothing and returns the current one.
        if libc.setfsuid(-1) != uid or libc.setfsgid(-1) != gid:
            raise UnsafePathError("cannot open %s as uid %d: cannot switch the filesystem identity to %d:%d; "
                                  "refusing to open it as root" % (db_path, uid, uid, gid))
        yield
    finally:
        libc.setfsuid(os.geteuid())
        libc.setfsgid(os.getegid())
        if groups_changed:
            os.setgroups(groups)


SQLITE_COMPANIONS = ("-journal", "-wal", "-shm")


def _database_files(db_path: str) -> os.stat_result:
    """The database and its companion files, none a link (the app can write their directory)."""
    info = refuse_links(db_path, *(db_path + suffix for suffix in SQLITE_COMPANIONS))
    if info is None:
        raise FileNotFoundError(errno.ENOENT, "no database file", db_path)
    return info


def sqlite_snapshot(db_path: str, snapshot_path: str) -> None:
    """Online, consistent copy with the sqlite3 backup API (safe while the app writes). No link in
    the app's directory is followed, and its files are opened as the database's owner."""
    backups_dir = os.path.dirname(snapshot_path)
    refuse_linked_dir(backups_dir)
    os.makedirs(backups_dir, mode=0o750, exist_ok=True)
    owner = _database_files(db_path)
    tmp_path = snapshot_path + ".partial"
    for leftover in (tmp_path, tmp_path + "-journal"):
        try:
            os.unlink(leftover)  # a killed run's file or a planted link: unlink never follows
        except FileNotFoundError:
            pass
    fd = os.open(tmp_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
    try:
        os.fchmod(fd, 0o640)
        target = sqlite3.connect(tmp_path)
        created, opened = os.fstat(fd), os.stat(tmp_path)
    finally:
        os.close(fd)
    try:
        if (created.st_dev, created.st_ino) != (opened.st_dev, opened.st_ino):
            raise UnsafePathError("%s was replaced while the snapshot was being taken; refusing to write it"
                                  % tmp_path)
        target.execute("PRAGMA journal_mode=MEMORY")  # no journal file beside the temp file
        with _filesystem_identity(db_path, owner):
            source = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True, timeout=30)
            try:
                source.backup(target)
            finally:
                source.close()
    except BaseException:
        target.close()
        os.unlink(tmp_path)
        raise
    target.close()
    os.rename(tmp_path, snapshot_path)


def sqlite_restore(snapshot_path: str, db_path: str) -> None:
    """Copy a snapshot back over the live database through SQLite's own locking. The snapshot is
    read into memory first; the database's files are then opened as their owner (the app), so no
    link the app planted can make root write elsewhere, and new files get the app's ownership."""
    if refuse_links(snapshot_path) is None:
        raise FileNotFoundError(errno.ENOENT, "no snapshot file", snapshot_path)
    owner = _database_files(db_path)
    memory = sqlite3.connect(":memory:")
    try:
        source = sqlite3.connect("file:%s?mode=ro" % snapshot_path, uri=True)
        try:
            source.backup(memory)
        finally:
            source.close()
        with _filesystem_identity(db_path, owner):
            target = sqlite3.connect(db_path, timeout=30)
            try:
                memory.backup(target)
            finally:
                target.close()
    finally:
        memory.close()
    for suffix in ("",) + SQLITE_COMPANIONS:
        try:  # keep the app's ownership (when not root, the files were opened as ourselves)
            os.chown(db_path + suffix, owner.st_uid, owner.st_gid, follow_symlinks=False)
        except (FileNotFoundError, PermissionError):
            pass
