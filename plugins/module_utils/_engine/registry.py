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
    """docker pull or docker manifest inspect failed; the message ends with the client's output."""


def docker_env(docker_config: t.Optional[str]) -> dict[str, str]:
    try:
        home = pwd.getpwuid(os.geteuid()).pw_dir or "/"
    except KeyError:
        home = "/"
    env = {"PATH": SAFE_PATH, "HOME": home, "LANG": "C.UTF-8"}
    if docker_config:
        env["DOCKER_CONFIG"] = docker_config
    return env


def _docker(argv: list[str], docker_config: t.Optional[str], timeout: float) -> str:
    try:
        proc = subprocess.run(argv, env=docker_env(docker_config), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RegistryError("%s failed: %s" % (" ".join(argv[:2]), exc))
    output = proc.stdout.decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        raise RegistryError("%s exited %d: %s" % (" ".join(argv[:3]), proc.returncode, output[-2000:]))
    return output


def pull(reference: str, docker_config: t.Optional[str], docker_command: str = "docker",
         timeout: float = 1800.0) -> None:
    """docker pull --quiet <reference>."""
    _docker([docker_command, "pull", "--quiet", reference], docker_config, timeout)


def manifest_exists(reference: str, docker_config: t.Optional[str], docker_command: str = "docker",
                    timeout: float = 60.0) -> None:
    """docker manifest inspect <reference> (check mode: does the registry have it?)."""
    _docker([docker_command, "manifest", "inspect", reference], docker_config, timeout)
