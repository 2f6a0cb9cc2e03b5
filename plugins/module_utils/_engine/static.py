# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Static files copied out of the image into the static root, never through a link."""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import secrets
import stat
import tarfile
import typing as t

from .errors import UnsafePathError
from .paths import link_message


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_dir_below(parent_fd: int, name: str, shown: str, create: bool) -> int:
    """openat(parent_fd, name) of a directory, never through a symbolic link (a link planted there
    is refused, naming `shown`); created (0755 before umask) when missing and `create`."""
    for _attempt in range(2):
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            if not create:
                raise
            try:
                os.mkdir(name, 0o755, dir_fd=parent_fd)
            except FileExistsError:
                pass  # made meanwhile: open it (again, never through a link)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePathError(link_message(shown)) from None
            if exc.errno == errno.ENOTDIR:
                try:
                    linked = stat.S_ISLNK(os.lstat(name, dir_fd=parent_fd).st_mode)
                except OSError:
                    linked = False
                raise UnsafePathError(link_message(shown) if linked else "%s is not a directory; refusing to "
                                      "extract static files into it" % shown) from None
            raise
    return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)


def _same_content(dir_fd: int, name: str, data: bytes) -> t.Optional[bool]:
    """Whether `name` in dir_fd is a regular file holding `data`; None when absent. A link, FIFO or
    device is never opened through (O_NOFOLLOW | O_NONBLOCK): it counts as changed and is replaced."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EACCES):
            return False
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size != len(data):
            return False
        with os.fdopen(os.dup(fd), "rb") as existing:
            return existing.read() == data
    finally:
        os.close(fd)


def _write_file_in(dir_fd: int, name: str, data: bytes) -> None:
    """Write `name` atomically inside the directory dir_fd: a new temp file (O_EXCL | O_NOFOLLOW: a
    name nobody planted), then rename(2) within that directory, which replaces whatever sits at
    `name` (a link included: the link goes, its target is never written)."""
    for _attempt in range(10):
        tmp_name = ".greenlight-%s" % secrets.token_hex(8)
        try:
            fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=dir_fd)
            break
        except FileExistsError:
            continue
    else:
        raise OSError(errno.EEXIST, "cannot create a temporary file for %s" % name)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, 0o644)
        finally:
            os.close(fd)
        os.rename(tmp_name, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name, dir_fd=dir_fd)
        raise


def extract_static(stream: t.IO[bytes], source_path: str, static_root: str) -> dict[str, int]:
    """Copy the files of a tar stream (Docker archive GET of `source_path`) into `static_root`.
    New files are added, changed files replaced atomically, files of older releases kept.

    Root runs this, and others may once have been able to write under the static root: no symbolic
    link at or under `static_root` is followed. Each directory is opened relative to the one above
    it with O_NOFOLLOW (a linked directory is refused, naming it); each file is written to a fresh
    temp name in that directory and renamed over its name, so a link at a file name is replaced,
    never written through. Links above `static_root` (root's own layout, e.g. /var/www) are used."""
    base = posixpath.basename(source_path.rstrip("/"))
    counts = {"added": 0, "updated": 0, "unchanged": 0, "skipped": 0}
    root = os.path.normpath(static_root)
    parent, root_name = os.path.split(root)
    os.makedirs(parent or "/", mode=0o755, exist_ok=True)
    parent_fd = os.open(parent or "/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        root_fd = _open_dir_below(parent_fd, root_name, root, create=True)
    finally:
        os.close(parent_fd)
    dirs: dict[tuple, int] = {(): root_fd}  # verified directory fds by path below the root

    def dir_fd(parts: list) -> int:
        key = tuple(parts)
        if key not in dirs:
            above = dir_fd(parts[:-1])
            dirs[key] = _open_dir_below(above, parts[-1], os.path.join(root, *parts), create=True)
        return dirs[key]

    try:
        with tarfile.open(fileobj=stream, mode="r|") as archive:
            for member in archive:
                parts = [p for p in member.name.split("/") if p not in ("", ".")]
                if parts and parts[0] == base:
                    parts = parts[1:]
                if member.name.startswith("/") or ".." in parts:
                    counts["skipped"] += 1
                    continue
                if member.isdir():
                    dir_fd(parts)
                    continue
                if not member.isfile() or not parts:
                    counts["skipped"] += 1  # links and devices are not copied
                    continue
                source = archive.extractfile(member)
                data = source.read() if source else b""
                directory = dir_fd(parts[:-1])
                same = _same_content(directory, parts[-1], data)
                if same:
                    counts["unchanged"] += 1
                    continue
                counts["added" if same is None else "updated"] += 1
                _write_file_in(directory, parts[-1], data)
    finally:
        for fd in dirs.values():
            os.close(fd)
    return counts
