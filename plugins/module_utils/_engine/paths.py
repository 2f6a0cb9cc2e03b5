# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Files in directories other users can write: never through a link, never a stranger's file."""

from __future__ import annotations

import errno
import os
import stat
import typing as t

from .errors import UnsafePathError
from .options import parse_mount


def link_message(path: str) -> str:
    return ("%s is a symbolic link; refusing to follow it (a link planted by a user who can write that "
            "directory could make root read or write the file it names). Remove it and re-run" % path)


def open_state_file(path: str, flags: int, mode: int = 0o640) -> int:
    """Open a file the engine keeps in <app_dir> (the lock, releases.jsonl), which the deploy user may
    be able to write: never through a symbolic link (O_NOFOLLOW), never a hard link to another file,
    a FIFO or a device, never a file owned by anyone but this process's user or the directory's owner
    (who could replace it anyway). Returns the fd; raises UnsafePathError naming the path."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePathError(link_message(path)) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePathError("%s is not a regular file; refusing to use it" % path)
        if info.st_nlink != 1:
            raise UnsafePathError("%s has %d hard links; refusing to write it (it may be another file linked "
                                  "there). Remove it and re-run" % (path, info.st_nlink))
        owners = {os.geteuid(), os.stat(os.path.dirname(path) or ".").st_uid}
        if info.st_uid not in owners:
            raise UnsafePathError("%s is owned by uid %d, neither this process's user (uid %d) nor its "
                                  "directory's owner; refusing to use it. Check who changed it, then remove it "
                                  "and re-run" % (path, info.st_uid, os.geteuid()))
    except BaseException:
        os.close(fd)
        raise
    return fd


def refuse_links(*paths: str) -> t.Optional[os.stat_result]:
    """Refuse any of `paths` that is a symbolic link or not a regular file; absent ones are fine.
    Returns the lstat of the first path (None when it is absent)."""
    first = None
    for number, path in enumerate(paths):
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(info.st_mode):
            raise UnsafePathError(link_message(path))
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePathError("%s is not a regular file; refusing to open it" % path)
        if number == 0:
            first = info
    return first


def refuse_linked_dir(path: str) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise UnsafePathError(link_message(path))
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePathError("%s is not a directory" % path)


def _link_only_root_controls(link: str) -> bool:
    """A symbolic link only root could have put there or can change: owned by root, in a
    directory owned by root that nobody else may write (or sticky: others cannot replace root's
    entries), e.g. /var/run -> /run, /etc/localtime -> /usr/share/zoneinfo/..."""
    info = os.lstat(link)
    parent = os.stat(os.path.realpath(os.path.dirname(link)))
    open_to_others = parent.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not parent.st_mode & stat.S_ISVTX
    return info.st_uid == 0 and parent.st_uid == 0 and not open_to_others


def check_mount_sources(mounts: t.Sequence[str]) -> None:
    """Refuse a bind mount whose host path goes through a symbolic link that someone other than
    root could have planted or can change (e.g. `data/` replaced by a link to /etc or /root, in a
    directory the deploy user owned in an earlier layout): Docker would mount the link's target,
    so whoever controls the link would choose what the app container gets. Root's own links (/var/run
    -> /run, /etc/localtime, /opt -> another disk made by root) are fine, as are named volumes and
    paths that do not exist yet (Docker creates them). Docker resolves the path again at every
    container start: the lasting guarantee is that the directories on the way are root's (app_host)."""
    for mount in mounts:
        host = parse_mount(mount)[0]
        if not host.startswith("/"):
            continue
        written = "/" + os.path.normpath(host).lstrip("/")
        real = os.path.realpath(written)
        if real == written:
            continue
        for link in _links_on_the_way(written):
            if not _link_only_root_controls(link):
                raise UnsafePathError(
                    "mount %r: its host path %s goes through the symbolic link %s (it resolves to %s), which "
                    "someone other than root could have put there or can change; refusing to bind-mount it "
                    "(whoever controls the link would choose what the container gets). Put the real directory "
                    "there, or name the real path in the mount, and re-run" % (mount, written, link, real))


def _links_on_the_way(path: str, limit: int = 40) -> list[str]:
    """Every symbolic link the kernel follows to resolve the absolute `path`, links inside link
    targets included, in order (at most `limit`, like ELOOP)."""
    links: list[str] = []
    pending = [part for part in path.split("/") if part not in ("", ".")]
    current = "/"
    while pending:
        part = pending.pop(0)
        if part == "..":
            current = os.path.dirname(current)
            continue
        candidate = os.path.join(current, part)
        if os.path.islink(candidate):
            links.append(candidate)
            if len(links) > limit:
                break
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = "/"
            pending[:0] = [p for p in target.split("/") if p not in ("", ".")]
        else:
            current = candidate
    return links


def root_only_problem(path: str) -> t.Optional[str]:
    """What lets someone other than root change `path` (a file root reads commands or credentials
    from, such as the registry login's Docker client directory), or None: the file and every
    directory above it, along the path as written and along its resolved path, belong to root
    (or the user running this) and are writable by nobody else (a sticky directory such as /tmp
    above it is fine: others cannot rename what is in it)."""
    euid = os.geteuid()
    for chain_start in (os.path.abspath(path), os.path.realpath(path)):
        current = chain_start
        while True:
            try:
                info = os.lstat(current)
            except OSError as exc:
                return "cannot read %s: %s" % (current, exc.strerror)
            if info.st_uid not in (0, euid):
                return "%s belongs to uid %d" % (current, info.st_uid)
            if not stat.S_ISLNK(info.st_mode) and info.st_mode & 0o022 and not (
                    current != chain_start and stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX):
                return "%s is writable by %s" % (current, "group and others" if info.st_mode & 0o022 == 0o022
                                                 else "its group" if info.st_mode & 0o020 else "others")
            parent = os.path.dirname(current)
            if parent == current:
                break
            current = parent
    return None
