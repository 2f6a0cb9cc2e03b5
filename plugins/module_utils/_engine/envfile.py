# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The app's env file: read as root from a directory the deploy user may write, parsed like Docker."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import typing as t

from .errors import SwapError


# Docker's env file reader (docker/cli pkg/kvfile) reads lines with bufio.Scanner: split on "\n"
# only (one "\r" before it dropped), a line of 64 KiB or more refuses the whole file, leading
# whitespace trimmed with Go's unicode.IsSpace (which, unlike str.isspace, excludes \x1c-\x1f).
ENV_LINE_MAX_BYTES = 65536
_GO_SPACES = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
             "\u2028\u2029\u202f\u205f\u3000"
# The env file is the deploy user's (app_env): root reads no more than this of it (a file truncated
# to gigabytes would otherwise be read into memory while the deploy lock is held).
ENV_FILE_MAX_BYTES = 1024 * 1024


def parse_env_file(content: str, environ: t.Optional[t.Mapping[str, str]] = None) -> list[str]:
    """Parse like `docker run --env-file`: KEY=VALUE lines kept verbatim, # comments, KEY alone
    takes the value from the environment. Errors name the line number, never a value."""
    environ = os.environ if environ is None else environ
    result = []
    lines = content.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    for number, raw_line in enumerate(lines, 1):
        # Not str.splitlines: it also splits on \v \f \x1c-\x1e \x85 U+2028 U+2029, so a value
        # holding one of them would turn into a second variable that Docker never sees.
        if len(raw_line.encode("utf-8")) >= ENV_LINE_MAX_BYTES:
            raise ValueError("env file line %d is 64 KiB or longer; docker --env-file refuses such a file" % number)
        if raw_line.endswith("\r"):
            raw_line = raw_line[:-1]
        line = raw_line
        if number == 1 and line.startswith("\ufeff"):
            line = line[1:]
        line = line.lstrip(_GO_SPACES)
        if not line or line.startswith("#"):
            continue
        key, has_value, value = line.partition("=")
        if not key or any(c.isspace() for c in key):
            raise ValueError("env file line %d: variable name is empty or contains whitespace" % number)
        if has_value:
            result.append("%s=%s" % (key, value))
        elif key in environ:
            result.append("%s=%s" % (key, environ[key]))
    return result


def read_env_file(path: t.Optional[str]) -> tuple[list[str], t.Optional[str]]:
    """The env file's KEY=value entries and the sha256 of its bytes (([], None) without one)."""
    if not path:
        return [], None
    # Read as root from a directory the deploy user may write: never through a link (root would
    # hand another file's lines to the container), never a FIFO (it would block, lock held).
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SwapError("env_file %s is a symbolic link; refusing to follow it (a link planted by a user "
                            "who can write that directory could make root read the file it names). Remove it "
                            "and re-run playbooks/setup.yml (role app_env)" % path)
        raise SwapError("cannot read env_file %s: %s" % (path, exc.strerror))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SwapError("env_file %s is not a regular file; refusing to read it. Remove it and re-run "
                            "playbooks/setup.yml (role app_env)" % path)
        if info.st_size > ENV_FILE_MAX_BYTES:
            raise SwapError("env_file %s is %d bytes, more than an env file holds (at most %d); refusing to "
                            "read it. Re-run playbooks/setup.yml (role app_env) to write it again"
                            % (path, info.st_size, ENV_FILE_MAX_BYTES))
        if info.st_nlink != 1:
            raise SwapError("env_file %s has %d hard links; refusing to read it (it may be another file linked "
                            "there). Remove it and re-run playbooks/setup.yml (role app_env)"
                            % (path, info.st_nlink))
        directory = os.stat(os.path.dirname(os.path.abspath(path)))
        # Its owner (app_env: the deploy user), this process's user, the directory's owner, or
        # anyone when only root could have put it there (a root-owned directory nobody else writes).
        root_only_dir = directory.st_uid == 0 and not directory.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if info.st_uid not in (os.geteuid(), directory.st_uid) and not root_only_dir:
            raise SwapError("env_file %s is owned by uid %d, neither this process's user (uid %d) nor its "
                            "directory's owner, in a directory others may write; refusing to read it. Check "
                            "who put it there, then re-run playbooks/setup.yml (role app_env)"
                            % (path, info.st_uid, os.geteuid()))
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        raw = b"".join(chunks)
    except OSError as exc:
        raise SwapError("cannot read env_file %s: %s" % (path, exc.strerror))
    finally:
        os.close(fd)
    try:
        env = parse_env_file(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SwapError("env_file %s: %s" % (path, exc))
    return env, hashlib.sha256(raw).hexdigest()
