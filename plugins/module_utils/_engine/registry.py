# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The registry, through the docker CLI: pull an image, or ask whether the registry has it.

Root runs the docker client with a fixed PATH and, as DOCKER_CONFIG, the registry login's client
directory (registry_login), so the engine never sees a registry password."""

from __future__ import annotations

import os
import pwd
import subprocess
import typing as t

# The only PATH root runs commands with (deploy.sh sets the same one; sudo may keep the caller's).
SAFE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


class RegistryError(Exception):
    """docker pull or docker manifest inspect failed; the message ends with the client's output
    (unless it went to a stream). `returncode`: the client's exit code, None when it did not run."""

    def __init__(self, message: str, returncode: t.Optional[int] = None) -> None:
        super().__init__(message)
        self.returncode = returncode


def docker_env(docker_config: t.Optional[str]) -> dict[str, str]:
    try:
        home = pwd.getpwuid(os.geteuid()).pw_dir or "/"
    except KeyError:
        home = "/"
    env = {"PATH": SAFE_PATH, "HOME": home, "LANG": "C.UTF-8"}
    if docker_config:
        env["DOCKER_CONFIG"] = docker_config
    return env


def _docker(argv: list[str], docker_config: t.Optional[str], timeout: t.Optional[float],
            output: t.Optional[t.IO[str]] = None) -> str:
    """Run the docker client; its output is returned, or written to `output` when given."""
    try:
        proc = subprocess.run(argv, env=docker_env(docker_config), stdout=output or subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RegistryError("%s failed: %s" % (" ".join(argv[:2]), getattr(exc, "strerror", None) or exc))
    text = proc.stdout.decode("utf-8", "replace").strip() if isinstance(proc.stdout, bytes) else ""
    if proc.returncode != 0:
        raise RegistryError("%s exited %d%s" % (" ".join(argv[:3]), proc.returncode,
                                                ": " + text[-2000:] if text else ""), proc.returncode)
    return text


def pull(reference: str, docker_config: t.Optional[str], docker_command: str = "docker",
         timeout: t.Optional[float] = 1800.0, output: t.Optional[t.IO[str]] = None) -> None:
    """docker pull <reference>, the one pull of both front ends (mode prepare, deploy.sh).

    output None: captured (a failure's message ends with it). A stream (deploy.sh: its stderr):
    the client writes there, with layer progress only when it is a terminal."""
    argv = [docker_command, "pull", reference]
    if output is None or not output.isatty():
        argv.insert(2, "--quiet")  # layer progress is only useful on a terminal
    _docker(argv, docker_config, timeout, output)


def manifest_exists(reference: str, docker_config: t.Optional[str], docker_command: str = "docker",
                    timeout: float = 60.0) -> None:
    """docker manifest inspect <reference> (check mode: does the registry have it?)."""
    _docker([docker_command, "manifest", "inspect", reference], docker_config, timeout)
