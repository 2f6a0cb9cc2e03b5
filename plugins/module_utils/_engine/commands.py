# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Commands the engine runs itself (the proxy test and reload): argv lists, never a shell."""

from __future__ import annotations

import shlex
import subprocess
import typing as t

from .errors import ProxyError


def as_argv(command: t.Union[str, t.Sequence[str]]) -> list[str]:
    """Commands are argv lists; a string is split like a shell would split it (no shell runs)."""
    if isinstance(command, str):
        return shlex.split(command)
    return [str(part) for part in command]


def run_command(command: t.Union[str, t.Sequence[str]], what: str, timeout: float = 60.0) -> str:
    argv = as_argv(command)
    if not argv:
        raise ProxyError("%s command is empty" % what)
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                              check=False, close_fds=True)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProxyError("%s command %s failed: %s" % (what, shlex.join(argv), exc)) from exc
    output = proc.stdout.decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        raise ProxyError("%s command %s exited %d: %s" % (what, shlex.join(argv), proc.returncode, output))
    return output
