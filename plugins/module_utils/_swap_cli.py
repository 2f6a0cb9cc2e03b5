# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The server-side front end of the swap engine: the command behind ``/opt/<app>/deploy.sh``.

Standard library only. The role ``greenlight.deploy.deploy_script`` copies this file with the
engine (``_swap.py``, ``_docker_api.py``, ``_proxy_nginx.py``) into ``/opt/<app>/lib/greenlight/``
and renders the engine options into ``deploy.json`` beside them from the same variables that
``playbooks/deploy.yaml`` passes to the ``container_swap`` module, so a deploy by hand over SSH and
a deploy from CI do exactly the same thing. Usage::

    deploy.sh <tag | sha256:<digest> | registry/repo:tag>   # pull, then swap
    deploy.sh rollback [RELEASE] [--restore-database]
    deploy.sh status
    deploy.sh restore-database RELEASE                     # used by rollback.yaml

Everything that decides or changes what serves lives in ``_swap.run_swap``; this file parses
arguments, pulls the image with ``docker pull`` (the root-owned registry login that
``registry_login`` made, so the engine never sees a registry password) and prints the result.

Root runs this through a sudo rule that lets the deploy user pass any arguments, so nothing the
caller passes or can write chooses what root runs or where it writes: the configuration path is
fixed by the root-owned ``deploy.sh`` (``main(argv, config_path=...)``; no option names a file,
no option may be abbreviated), ``deploy.json`` and the Docker client directory must be changeable
by root only, and the files in the deploy user's app directory (``releases.jsonl``,
``deploy.lock``, ``backups/``) are never followed through a symlink.
"""

from __future__ import annotations

import argparse
import datetime
import errno
import fcntl
import json
import os
import pwd
import re
import socket
import stat
import subprocess
import sys
import time
import typing as t

from ._docker_api import DockerClient, DockerError
from ._proxy_nginx import read_upstream_port
from ._swap import (
    LABEL_IMAGE,
    LABEL_PORT,
    LABEL_RELEASE,
    LABEL_SERVICE,
    OPTION_NAMES,
    SERVICE_WEB,
    DeployLock,
    OptionsError,
    SwapError,
    UnsafePathError,
    append_jsonl,
    current_actor,
    open_state_file,
    options_from_dict,
    parse_image_reference,
    run_swap,
    sqlite_restore,
    sqlite_snapshot,
    utc_now,
)

PROG = "deploy.sh"
# The only PATH root runs commands with (deploy.sh sets the same one; sudo may keep the caller's).
SAFE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
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


# --------------------------------------------------------------------------------------------
# Configuration and image references
# --------------------------------------------------------------------------------------------
def check_root_only(path: str, setting: str) -> None:
    """Refuse a file root reads commands or credentials from unless only root (the user running
    this) can change it: the file and every directory above it, along the path as written and
    along its resolved path, belong to root and are writable by nobody else (a sticky directory
    such as /tmp above it is fine: others cannot rename what is in it)."""
    euid = os.geteuid()
    for chain_start in (os.path.abspath(path), os.path.realpath(path)):
        current = chain_start
        while True:
            try:
                info = os.lstat(current)
            except OSError as exc:
                raise CliError("cannot read %s (%s): %s" % (current, setting, exc.strerror), EXIT_FAILED)
            problem = None
            if info.st_uid not in (0, euid):
                problem = "belongs to uid %d" % info.st_uid
            elif not stat.S_ISLNK(info.st_mode) and info.st_mode & 0o022 and not (
                    current != chain_start and stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX):
                problem = "is writable by %s" % ("group and others" if info.st_mode & 0o022 == 0o022
                                                 else "its group" if info.st_mode & 0o020 else "others")
            if problem:
                raise CliError("refusing %s (%s): %s %s, but deploy.sh runs as root and must only use files "
                               "that root alone can change; re-run playbooks/setup.yaml (roles deploy_script "
                               "and registry_login) or fix the owner and mode" % (path, setting, current, problem),
                               EXIT_FAILED)
            parent = os.path.dirname(current)
            if parent == current:
                break
            current = parent


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
    """`docker pull` with the root-owned registry login (DOCKER_CONFIG), output to stderr.

    The Docker client runs helpers its configuration names (credsStore, credHelpers, CLI plugins,
    contexts), so root uses only a client directory that root alone can change."""
    docker_config = config.get("docker_config")
    if not docker_config:
        raise CliError("deploy.json names no docker_config (the root-owned Docker client directory with the "
                       "registry login); re-run playbooks/setup.yaml (role deploy_script)", EXIT_FAILED)
    check_root_only(docker_config, "docker_config")
    if os.path.lexists(os.path.join(docker_config, "config.json")):
        check_root_only(os.path.join(docker_config, "config.json"), "docker_config")
    # Nothing of the caller's environment: under sudo without secure_path its PATH would choose
    # which `docker` root runs, and DOCKER_HOST/DOCKER_CONTEXT/... where the client goes.
    try:
        home = pwd.getpwuid(os.geteuid()).pw_dir
    except KeyError:
        home = "/"
    env = {"PATH": SAFE_PATH, "HOME": home, "DOCKER_CONFIG": docker_config, "LANG": "C.UTF-8"}
    argv = [config.get("docker_command") or "docker", "pull", reference]
    if not sys.stderr.isatty():
        argv.insert(2, "--quiet")  # layer progress is only useful on a terminal
    _err("%s: docker pull %s" % (PROG, reference))
    try:
        proc = subprocess.run(argv, env=env, stdout=sys.stderr, stderr=subprocess.STDOUT, check=False)
    except OSError as exc:
        raise CliError("cannot run %s: %s" % (argv[0], exc.strerror), EXIT_FAILED)
    if proc.returncode != 0:
        raise CliError("docker pull %s failed (exit %d); nothing was changed, the live release keeps serving"
                       % (reference, proc.returncode), EXIT_FAILED)


# --------------------------------------------------------------------------------------------
# Reading the server's state (status, restore-database)
# --------------------------------------------------------------------------------------------
def read_records(path: str, limit: int | None = None) -> list[dict[str, t.Any]]:
    try:  # never through a link the deploy user planted (root would show another file's lines)
        with os.fdopen(open_state_file(path, os.O_RDONLY), encoding="utf-8") as handle:
            lines = handle.readlines()
    except FileNotFoundError:
        return []
    except UnsafePathError as exc:
        raise CliError(str(exc), EXIT_FAILED)
    records = []
    for line in lines[-limit:] if limit else lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def web_containers(opts: t.Any) -> tuple[dict[str, t.Any] | None, list[dict[str, t.Any]], int | None]:
    """(live web container or None, every web container of the app, upstream port)."""
    docker = DockerClient(opts.docker_socket)
    containers = docker.list_containers(labels={"greenlight.app": opts.app_name})
    webs = [c for c in containers if (c.get("Labels") or {}).get(LABEL_SERVICE) == SERVICE_WEB]
    port = read_upstream_port(opts.upstream_file)
    live = None
    for container in sorted(webs, key=lambda c: c.get("Created", 0), reverse=True):
        if (container.get("Labels") or {}).get(LABEL_PORT) == str(port) and container.get("State") == "running":
            live = container
            break
    return live, webs, port


def lock_holder(lock_file: str) -> dict[str, t.Any] | None:
    """The holder's details when another process holds the deploy lock, else None."""
    try:  # like the engine opens it: no symbolic or hard link, a regular file, owner checked
        fd = open_state_file(lock_file, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except UnsafePathError as exc:
        raise CliError("refusing to read the deploy lock: %s" % exc, EXIT_FAILED)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _holder_details(fd) or {"pid": "unknown"}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _holder_details(fd: int) -> dict[str, t.Any] | None:
    """What the holder wrote into the lock file (read from the descriptor opened without
    following links; the holder may be rewriting it right now)."""
    for _attempt in range(5):
        content = os.pread(fd, 65536, 0).decode("utf-8", "replace")
        if content.strip():
            try:
                holder = json.loads(content)
            except ValueError:
                holder = None
            if isinstance(holder, dict):
                return holder
        time.sleep(0.02)
    return None


def snapshot_before_leaving(records: list[dict[str, t.Any]], release: str) -> dict[str, t.Any] | None:
    """The newest successful record that replaced `release` and took a snapshot first: its snapshot
    is the database as `release` left it, before the next release's pre-switch commands ran."""
    for record in reversed(records):
        if record.get("result") == "ok" and record.get("previous_release") == release \
                and record.get("release") != release and record.get("snapshot"):
            return record
    return None


def snapshot_in_backups(snapshot: t.Any, backups_dir: str) -> str:
    """The snapshot path of a releases.jsonl record, accepted only as a regular file (no symlink)
    directly in the backup directory: the deploy user could write that log on a server app_host has
    not made it root's yet, and root copies the snapshot over the database."""
    name = os.path.basename(str(snapshot))
    if not isinstance(snapshot, str) or os.path.normpath(os.path.dirname(snapshot)) != os.path.normpath(backups_dir) \
            or name in ("", ".", ".."):
        raise CliError("refusing snapshot %r from the releases log: not a file of the backup directory %s"
                       % (snapshot, backups_dir), EXIT_FAILED)
    try:
        info = os.lstat(snapshot)
    except FileNotFoundError:
        return snapshot  # reported as pruned by the caller
    if not stat.S_ISREG(info.st_mode):
        raise CliError("refusing snapshot %s: not a regular file of the backup directory %s (a symlink?)"
                       % (snapshot, backups_dir), EXIT_FAILED)
    return snapshot


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------
def _phase_logger(verbose: bool) -> t.Callable[[str], None]:
    def log(message: str) -> None:
        if verbose:
            _err("%s: %s" % (PROG, message))
    return log


def _describe_result(result: dict[str, t.Any], check: bool) -> list[str]:
    phases = result.get("phases") or {}
    total = sum(v for v in phases.values() if isinstance(v, (int, float)))
    verb = "would put" if check else "put"
    if not result.get("changed"):
        lines = ["%s: release %s is already live with this image and configuration; nothing changed"
                 % (PROG, result.get("release"))]
    else:
        lines = ["%s: %s release %s live (%s; previous release %s)"
                 % (PROG, verb, result.get("release"), result.get("swap_action") or result.get("action"),
                    result.get("previous_release") or "none")]
    lines.append("  image:   %s" % (result.get("image_digest") or result.get("image")))
    if result.get("live_port"):
        lines.append("  serving: 127.0.0.1:%s (%s)" % (result.get("live_port"), result.get("container_name") or "-"))
    if check and result.get("actions"):
        lines.append("  steps:")
        lines.extend("    - %s" % step for step in result["actions"])
    if phases:
        lines.append("  phases:  %s (total %.1fs)" % (", ".join("%s %.2fs" % (k, v) for k, v in phases.items()),
                                                       total))
    return lines


def _run(options: dict[str, t.Any], args: argparse.Namespace) -> int:
    try:
        result = run_swap(options, log=_phase_logger(not args.json))
    except SwapError as exc:
        if args.json:
            _out(json.dumps(dict(exc.result, failed=True, msg=str(exc)), sort_keys=True, default=str))
        _err("%s: FAILED: %s" % (PROG, exc))
        return EXIT_FAILED
    if args.json:
        _out(json.dumps(result, sort_keys=True, default=str))
    else:
        for line in _describe_result(result, options.get("check_mode", False)):
            _out(line)
    return EXIT_OK


def cmd_deploy(config: dict[str, t.Any], args: argparse.Namespace) -> int:
    reference = image_reference(args.image, config.get("image_repository"))
    options = dict(config["swap"], image=reference, mode="deploy", check_mode=args.check,
                   actor=args.actor or os.environ.get("GREENLIGHT_DEPLOY_ACTOR") or "deploy.sh")
    if args.release:
        options["release"] = args.release
    try:
        options_from_dict(dict(options))  # bad options fail here, before the pull
    except SwapError as exc:
        raise CliError(str(exc))
    if args.check:
        try:
            DockerClient(options.get("docker_socket") or "/var/run/docker.sock").inspect_image(reference)
        except DockerError:
            _out("%s: would pull %s and put it live (the image is not on this server yet, so the steps "
                 "cannot be predicted)" % (PROG, reference))
            return EXIT_OK
    elif not args.no_pull:
        pull(reference, config)
    return _run(options, args)


def cmd_rollback(config: dict[str, t.Any], args: argparse.Namespace) -> int:
    options = dict(config["swap"], mode="rollback", check_mode=args.check,
                   actor=args.actor or os.environ.get("GREENLIGHT_DEPLOY_ACTOR") or "deploy.sh rollback")
    if args.release:
        options["rollback_release"] = args.release
    code = _run(options, args)
    if code != EXIT_OK or not args.restore_database or args.check:
        return code
    target = args.release
    if not target:
        opts = read_options(config)
        live, _webs, _port = web_containers(opts)
        target = (live.get("Labels") or {}).get(LABEL_RELEASE) if live else None
    return _restore(config, target, args)


def cmd_restore_database(config: dict[str, t.Any], args: argparse.Namespace) -> int:
    return _restore(config, args.release, args)


def _restore(config: dict[str, t.Any], release: str | None, args: argparse.Namespace) -> int:
    """Put back the snapshot taken just before `release` was replaced (writes since are lost)."""
    opts = read_options(config)
    if not opts.sqlite_path:
        raise CliError("no sqlite_path is configured, so there is no database snapshot to restore")
    live, _webs, _port = web_containers(opts)
    live_release = (live.get("Labels") or {}).get(LABEL_RELEASE) if live else None
    if not release or live_release != release:
        raise CliError("refusing to restore the database: release %s must be live first (live: %s); "
                       "run `deploy.sh rollback %s` before" % (release, live_release, release or "<release>"))
    record = snapshot_before_leaving(read_records(opts.releases_log), release)
    if not record:
        raise CliError("%s has no snapshot taken when release %s was replaced; nothing restored"
                       % (opts.releases_log, release), EXIT_FAILED)
    snapshot = snapshot_in_backups(record["snapshot"], opts.backups_dir)
    # The deploy user can write releases.jsonl: restore only a snapshot the engine names and keeps.
    name = os.path.basename(snapshot) if isinstance(snapshot, str) else ""
    if not name.startswith(opts.app_name + "-") or not name.endswith(".sqlite3") \
            or os.path.normpath(os.path.dirname(snapshot)) != os.path.normpath(opts.backups_dir):
        raise CliError("%s names %r, which is not a snapshot in %s; nothing restored (check who edited the log)"
                       % (opts.releases_log, snapshot, opts.backups_dir), EXIT_FAILED)
    if not os.path.exists(snapshot):
        raise CliError("snapshot %s (taken before release %s) is gone (pruned, backups_to_keep=%d); nothing "
                       "restored" % (snapshot, record.get("release"), opts.backups_to_keep), EXIT_FAILED)
    actor = current_actor(args.actor or os.environ.get("GREENLIGHT_DEPLOY_ACTOR") or "restore-database")
    lock = DeployLock(opts.lock_file, dict(actor, app=opts.app_name, release=release, action="restore-database",
                                           since=utc_now(), phase="restore"))
    outcome: dict[str, t.Any] = {"action": "restore-database", "changed": False, "release": release,
                                 "snapshot": snapshot, "replaced_by": record.get("release")}
    if args.check:
        _out("%s: would restore %s into %s (the database as release %s left it, before release %s migrated); "
             "writes made since are lost" % (PROG, snapshot, opts.sqlite_path, release, record.get("release")))
        return EXIT_OK
    started = time.monotonic()
    lock.acquire(opts.lock_timeout)
    try:
        if os.path.lexists(opts.sqlite_path):  # a dangling link is refused by the snapshot, not skipped
            stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
            safety = os.path.join(opts.backups_dir, "%s-%s-before-restore.sqlite3" % (opts.app_name, stamp))
            sqlite_snapshot(opts.sqlite_path, safety)
            outcome["safety_snapshot"] = safety
        sqlite_restore(snapshot, opts.sqlite_path)
        outcome.update({"changed": True, "phases": {"restore": round(time.monotonic() - started, 3)}})
        record_line = {"time": utc_now(), "app": opts.app_name, "actor": actor, "result": "ok"}
        record_line.update(outcome)
        append_jsonl(opts.releases_log, record_line)
    finally:
        lock.release()
    if args.json:
        _out(json.dumps(outcome, sort_keys=True))
    else:
        _out("%s: restored the database %s from %s (as release %s left it before release %s migrated); "
             "the state before the restore is kept in %s"
             % (PROG, opts.sqlite_path, snapshot, release, outcome.get("replaced_by"),
                outcome.get("safety_snapshot", "-")))
    return EXIT_OK


def cmd_status(config: dict[str, t.Any], args: argparse.Namespace) -> int:
    opts = read_options(config)
    try:
        live, webs, port = web_containers(opts)
    except DockerError as exc:
        raise CliError("cannot read the containers: %s" % exc, EXIT_FAILED)
    holder = lock_holder(opts.lock_file)
    records = read_records(opts.releases_log, limit=args.last)

    def describe(container: dict[str, t.Any]) -> dict[str, t.Any]:
        labels = container.get("Labels") or {}
        return {"release": labels.get(LABEL_RELEASE), "image": labels.get(LABEL_IMAGE),
                "container": (container.get("Names") or ["?"])[0].lstrip("/"), "state": container.get("State"),
                "port": labels.get(LABEL_PORT)}

    def describe_live(container: dict[str, t.Any]) -> dict[str, t.Any]:
        """The live container as Docker runs it: its image id and that image's registry digest
        (what promote.yaml deploys elsewhere; never releases.jsonl, an audit record, not a source of truth)."""
        info = describe(container)
        info["image_id"] = container.get("ImageID")
        info["image_digest"] = None
        info["since"] = datetime.datetime.fromtimestamp(container.get("Created") or 0, datetime.timezone.utc) \
            .strftime("%Y-%m-%dT%H:%M:%SZ")
        if info["image_id"]:
            try:
                digests = DockerClient(opts.docker_socket).inspect_image(info["image_id"]).get("RepoDigests") or []
            except DockerError:
                digests = []
            repository = config.get("image_repository")
            ours = [d for d in digests if repository and d.split("@", 1)[0] == repository]
            info["image_digest"] = (ours or digests or [None])[0]
        return info

    status = {
        "app": opts.app_name,
        "host": socket.gethostname(),
        "upstream_port": port,
        "live": describe_live(live) if live else None,
        "kept": [describe(c) for c in webs if live is None or c["Id"] != live["Id"]],
        "lock": holder,
        "releases_log": opts.releases_log,
        "last_records": records,
    }
    if args.json:
        _out(json.dumps(status, sort_keys=True, default=str))
        return EXIT_OK
    if live:
        info = status["live"]
        _out("%s on %s: release %s is live (%s, 127.0.0.1:%s, image %s)"
             % (opts.app_name, status["host"], info["release"], info["container"], port, info["image"]))
    else:
        _out("%s on %s: no release is live (upstream port %s)" % (opts.app_name, status["host"], port))
    for kept in status["kept"]:
        _out("  kept:  %s (%s, %s)" % (kept["release"], kept["container"], kept["state"]))
    _out("  lock:  %s" % ("free" if not holder else "held by pid %s (%s), %s of %s, phase %s, since %s"
                          % (holder.get("pid"), holder.get("user"), holder.get("action"), holder.get("release"),
                             holder.get("phase"), holder.get("since"))))
    _out("  log:   %s (last %d records)" % (opts.releases_log, len(records)))
    for record in records:
        _out("    %s %-16s %-6s %s (previous %s)%s"
             % (record.get("time"), record.get("action"), record.get("result"), record.get("release"),
                record.get("previous_release"),
                " failed in %s" % record.get("failed_phase") if record.get("failed_phase") else ""))
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------
COMMANDS = ("deploy", "rollback", "status", "restore-database")


def build_parser() -> argparse.ArgumentParser:
    """No option names a file and none may be abbreviated: root runs this for the deploy user
    (sudo), with the configuration deploy.sh fixes."""
    parser = argparse.ArgumentParser(
        prog=PROG, allow_abbrev=False,
        description="Deploy, roll back or inspect this server's app with the greenlight swap engine "
                    "(the same engine as the greenlight.deploy.container_swap module).",
        epilog="Examples: deploy.sh 3f2c1ab | deploy.sh sha256:<digest> | deploy.sh rollback | "
               "deploy.sh rollback v1 | deploy.sh status")
    sub = parser.add_subparsers(dest="command", metavar="{deploy,rollback,status,restore-database}")

    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    common.add_argument("--json", action="store_true", help="print the result as one JSON object")
    common.add_argument("--actor", help="free text recorded in releases.jsonl (default: $GREENLIGHT_DEPLOY_ACTOR)")

    deploy = sub.add_parser("deploy", parents=[common], allow_abbrev=False, help="pull an image and put it live")
    deploy.add_argument("image", help="tag, sha256:<digest>, or a full image reference")
    deploy.add_argument("--release", help="release id to record (default: the tag, or 12 digits of the digest)")
    deploy.add_argument("--check", action="store_true", help="say what would change, change nothing")
    deploy.add_argument("--no-pull", action="store_true", help="use the image already on the server")

    rollback = sub.add_parser("rollback", parents=[common], allow_abbrev=False,
                              help="put a kept earlier release live again")
    rollback.add_argument("release", nargs="?", help="release id (default: the previous release)")
    rollback.add_argument("--restore-database", action="store_true",
                          help="afterwards restore the database snapshot taken when that release was replaced "
                               "(writes made since are LOST)")
    rollback.add_argument("--check", action="store_true", help="say what would change, change nothing")

    status = sub.add_parser("status", parents=[common], allow_abbrev=False,
                            help="live release, kept releases, lock, last records")
    status.add_argument("--last", type=int, default=5, help="number of releases.jsonl records to show")

    restore = sub.add_parser("restore-database", parents=[common], allow_abbrev=False,
                             help="restore the snapshot taken when RELEASE was replaced (RELEASE must be live)")
    restore.add_argument("release")
    restore.add_argument("--check", action="store_true", help="say what would be restored, change nothing")
    return parser


def main(argv: t.Sequence[str] | None = None, config_path: str | None = None) -> int:
    """deploy.sh's entry point. `config_path` is deploy.json, fixed by the root-owned deploy.sh
    that calls this; no argument can name another one."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not config_path:
        _err("%s: run %s through the deploy.sh that greenlight.deploy.deploy_script installed "
             "(it fixes the configuration file)" % (PROG, PROG))
        return EXIT_USAGE
    # `deploy.sh v2 --check` is short for `deploy.sh deploy v2 --check` (options may come first).
    words = [a for a in argv if not a.startswith("-")]
    if words and words[0] not in COMMANDS and "-h" not in argv and "--help" not in argv:
        argv = ["deploy"] + argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors and --help
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if not args.command:
        parser.print_usage(sys.stderr)
        _err("%s: name an image tag or digest to deploy, or rollback / status" % PROG)
        return EXIT_USAGE
    handlers = {"deploy": cmd_deploy, "rollback": cmd_rollback, "status": cmd_status,
                "restore-database": cmd_restore_database}
    try:
        config = load_config(config_path)
        return handlers[args.command](config, args)
    except CliError as exc:
        _err("%s: %s" % (PROG, exc))
        return exc.code
    except OptionsError as exc:
        _err("%s: %s" % (PROG, exc))
        return EXIT_USAGE
    except SwapError as exc:  # e.g. the deploy lock is held by another deploy
        _err("%s: %s" % (PROG, exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        _err("%s: interrupted; the deploy lock is freed by the kernel, re-run to converge" % PROG)
        return 130


if __name__ == "__main__":
    sys.exit(main())  # refuses: only deploy.sh knows the configuration file
