# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""deploy.sh's configuration and inputs: deploy.json (root's only), image references the caller may
pass, the pull with root's registry login, the releases log as the CLI reads it, and terminal-safe
output. Root runs all of it for the deploy user (sudo): nothing the caller passes chooses a file."""

from __future__ import annotations

import json
import os
import re
import sys
import typing as t

from .audit import read_records as _read_records
from .errors import SwapError, UnsafePathError
from .lock import lock_holder as _lock_holder
from . import registry
from .options import OPTION_NAMES, options_from_dict, parse_image_reference
from .paths import root_only_problem
from .registry import RegistryError
from .restore import snapshot_in_backups as _snapshot_in_backups

PROG = "deploy.sh"
# A tag deploy.sh accepts is also a release id (rollback needs one); \Z, not $ (no trailing newline).
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}\Z")
# Options the command line decides; deploy.json holds every other engine option.
PER_RUN_OPTIONS = ("image", "mode", "rollback_release", "release", "actor", "check_mode")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A problem found before anything changed (usage, configuration, pull)."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


# Control characters (C0 but newline and tab, DEL, C1) and bidi overrides: what the deploy user or
# the app wrote (--actor, releases.jsonl, the lock, log lines) must not drive the reader's terminal.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _printable(text: str) -> str:
    return _CONTROL.sub(lambda match: "\\x%02x" % ord(match.group(0)) if ord(match.group(0)) < 0x100
                        else "\\u%04x" % ord(match.group(0)), text)


def _out(text: str) -> None:
    sys.stdout.write(_printable(text) + "\n")
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(_printable(text) + "\n")
    sys.stderr.flush()


def check_root_only(path: str, setting: str) -> None:
    """Refuse a file root reads commands or credentials from unless only root can change it
    (paths.root_only_problem)."""
    problem = root_only_problem(path)
    if problem:
        raise CliError("refusing %s (%s): %s, but deploy.sh runs as root and must only use files that root alone "
                       "can change; re-run playbooks/setup.yml (roles deploy_script and registry_login) or fix "
                       "the owner and mode" % (path, setting, problem), EXIT_FAILED)


def load_config(path: str) -> dict[str, t.Any]:
    """deploy.json: {"swap": {engine options}, "image_repository": ..., "docker_config": ...}."""
    check_root_only(path, "deploy.json")
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except OSError as exc:
        raise CliError("cannot read %s: %s (is greenlight.deploy.deploy_script applied to this server?)"
                       % (path, exc.strerror))
    except ValueError as exc:
        raise CliError("%s is not valid JSON: %s" % (path, exc))
    if not isinstance(config, dict) or not isinstance(config.get("swap"), dict):
        raise CliError("%s must hold an object with a \"swap\" object of engine options" % path)
    swap = config["swap"]
    unknown = sorted(set(swap) - set(OPTION_NAMES))
    fixed = sorted(set(swap) & set(PER_RUN_OPTIONS))
    if unknown or fixed:
        raise CliError("%s: swap options %s are not engine options for deploy.json"
                       % (path, ", ".join(unknown + fixed)))
    return config


def read_options(config: dict[str, t.Any]) -> t.Any:
    """The engine options of deploy.json with derived paths, for commands that only read state
    (validated as a rollback, the one mode that needs no image)."""
    return options_from_dict(dict(config["swap"], mode="rollback"))


def image_reference(argument: str, repository: str | None) -> str:
    """`v2` -> repo:v2, `sha256:<64 hex>` -> repo@sha256:..., `registry/repo:tag` kept as is when it
    names the configured repository: the caller (the deploy user, through sudo) picks a release of
    the app, never an image from elsewhere to run with the app's secrets and mounts."""
    if "/" in argument or "@" in argument:
        reference = argument
        name = re.split(r"@", reference, maxsplit=1)[0]
        name = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
        if not repository or name != repository:
            raise CliError("%s is not an image of %s (image_repository); deploy.sh deploys a tag or digest of "
                           "that repository only" % (reference, repository or "the configured repository"))
    elif DIGEST_RE.match(argument):
        if not repository:
            raise CliError("image_repository is not set in the configuration; pass a full reference "
                           "(registry/repo@sha256:...)")
        reference = "%s@%s" % (repository, argument)
    elif TAG_RE.match(argument):
        if not repository:
            raise CliError("image_repository is not set in the configuration; pass a full reference "
                           "(registry/repo:tag)")
        reference = "%s:%s" % (repository, argument)
    else:
        raise CliError("%r is not an image tag, a sha256:<64 hex> digest or an image reference" % argument)
    try:
        parse_image_reference(reference)
    except ValueError as exc:
        raise CliError(str(exc))
    return reference


def pull(reference: str, config: dict[str, t.Any]) -> None:
    """`docker pull` (registry.pull, the same as mode prepare's) with the root-owned registry login
    (DOCKER_CONFIG), output to stderr.

    The Docker client runs helpers its configuration names (credsStore, credHelpers, CLI plugins,
    contexts), so root uses only a client directory that root alone can change."""
    docker_config = config.get("docker_config")
    if not docker_config:
        raise CliError("deploy.json names no docker_config (the root-owned Docker client directory with the "
                       "registry login); re-run playbooks/setup.yml (role deploy_script)", EXIT_FAILED)
    check_root_only(docker_config, "docker_config")
    if os.path.lexists(os.path.join(docker_config, "config.json")):
        check_root_only(os.path.join(docker_config, "config.json"), "docker_config")
    # Nothing of the caller's environment (registry.py): under sudo without secure_path its PATH
    # would choose which `docker` root runs, and DOCKER_HOST/DOCKER_CONTEXT/... where the client goes.
    _err("%s: docker pull %s" % (PROG, reference))
    try:
        registry.pull(reference, docker_config, config.get("docker_command") or "docker", timeout=None,
                      output=sys.stderr)
    except RegistryError as exc:
        if exc.returncode is None:
            raise CliError("cannot run %s" % exc, EXIT_FAILED)
        raise CliError("docker pull %s failed (exit %d); nothing was changed, the live release keeps serving"
                       % (reference, exc.returncode), EXIT_FAILED)


def read_records(path: str, limit: int | None = None) -> list[dict[str, t.Any]]:
    """releases.jsonl's records (audit.read_records); a linked or foreign file is a CliError."""
    try:
        return _read_records(path, limit)
    except UnsafePathError as exc:
        raise CliError(str(exc), EXIT_FAILED)


def snapshot_in_backups(snapshot: t.Any, backups_dir: str) -> str:
    """restore.snapshot_in_backups (mode restore's check of a releases.jsonl snapshot path); a
    refused one is a CliError."""
    try:
        return _snapshot_in_backups(snapshot, backups_dir)
    except SwapError as exc:
        raise CliError(str(exc), EXIT_FAILED)


def lock_holder(lock_file: str) -> dict[str, t.Any] | None:
    """lock.lock_holder; a linked or foreign lock file is a CliError."""
    try:
        return _lock_holder(lock_file)
    except UnsafePathError as exc:
        raise CliError("refusing to read the deploy lock: %s" % exc, EXIT_FAILED)
