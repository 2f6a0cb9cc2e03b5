# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The server-side front end of the swap engine: the command behind ``/opt/<app>/deploy.sh``.

Standard library only. The role ``greenlight.deploy.deploy_script`` copies the engine package
(``plugins/module_utils/_engine/``) into ``/opt/<app>/lib/greenlight/``
and renders the engine options into ``deploy.json`` beside them from the same variables that
``playbooks/deploy.yml`` passes to the ``container_swap`` module, so a deploy by hand over SSH and
a deploy from CI do exactly the same thing. Usage::

    deploy.sh <tag | sha256:<digest> | registry/repo:tag>   # pull, then swap
    deploy.sh rollback [RELEASE] [--restore-database]
    deploy.sh status
    deploy.sh restore-database RELEASE                     # used by rollback.yml
    deploy.sh logs | run -- <command> | maintenance on|off  # day-2 commands: cli_ops.py

Everything that decides or changes what serves lives in ``swap.run_swap``; this file parses
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
import json
import os
import socket
import sys
import typing as t

from . import cli_ops, state
from .cli_config import (EXIT_FAILED, EXIT_OK, EXIT_USAGE, PROG, CliError, _err, _out, image_reference, load_config,
                         pull, read_options)
from .cli_progress import Progress
from .context import Run
from .docker_api import DockerClient, DockerError
from .errors import OptionsError, SwapError, UnsafePathError
from .options import options_from_dict
from .restore import RestoreRefused, run_restore
from .swap import run_swap


def live_release_of(opts: t.Any) -> t.Optional[str]:
    """The release live now (state.py, the one reader)."""
    try:
        return state.read_state(DockerClient(opts.docker_socket), opts.app_name, opts.upstream_file).live_release
    except DockerError as exc:
        raise CliError("cannot read the containers: %s" % exc, EXIT_FAILED)


def _phase_logger(verbose: bool) -> t.Callable[[str], None]:
    def log(message: str) -> None:
        # Phase starts are shown by Progress (cli_progress.py); the other messages here.
        if verbose and not message.startswith("phase "):
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
    stopping = result.get("stopping_old")
    if stopping:
        lines.append("  old:     release %s (%s) is stopping in the background (pid %s, holding the deploy lock "
                     "until it is stopped; kept for rollback)" % (stopping.get("release"), stopping.get("container"),
                                                                  stopping.get("pid")))
    if check and result.get("actions"):
        lines.append("  steps:")
        lines.extend("    - %s" % step for step in result["actions"])
    if phases:
        shown = ", ".join("%s %.2fs" % (k, v) for k, v in phases.items())
        lines.append("  phases:  %s (total %.1fs)" % (shown, total))
    return lines


def _run(options: dict[str, t.Any], args: argparse.Namespace) -> int:
    # Each phase as it runs, on stderr: redrawn in place on a terminal, plain lines otherwise.
    progress = None if args.json else Progress(sys.stderr)
    try:
        result = run_swap(options, log=_phase_logger(not args.json), background_stop=True, progress=progress)
    except SwapError as exc:
        if progress:
            progress.failed()
        if args.json:
            _out(json.dumps(dict(exc.result, failed=True, msg=str(exc)), sort_keys=True, default=str))
        _err("%s: FAILED: %s" % (PROG, exc))
        return EXIT_FAILED
    finally:
        if progress:
            progress.close()
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
        target = live_release_of(read_options(config))
    return _restore(config, target, args)


def cmd_restore_database(config: dict[str, t.Any], args: argparse.Namespace) -> int:
    return _restore(config, args.release, args)


def _restore(config: dict[str, t.Any], release: str | None, args: argparse.Namespace) -> int:
    """Put back the snapshot taken just before `release` was replaced (writes since are lost):
    the engine's mode restore (restore.py)."""
    opts = read_options(config)
    if not opts.sqlite_path:
        raise CliError("no sqlite_path is configured, so there is no database snapshot to restore")
    options = dict(config["swap"], mode="restore", check_mode=args.check,
                   actor=args.actor or os.environ.get("GREENLIGHT_DEPLOY_ACTOR") or "restore-database")
    if release:
        options["release"] = release
    try:
        run = Run(options_from_dict(options))
    except SwapError as exc:
        raise CliError(str(exc))
    try:
        result = run_restore(run, live=live_release_of(opts))
    except RestoreRefused as exc:
        raise CliError(str(exc).split(": ", 1)[-1])
    except SwapError as exc:
        if args.json:
            _out(json.dumps(dict(exc.result, failed=True, msg=str(exc)), sort_keys=True, default=str))
        raise CliError(str(exc), EXIT_FAILED)
    if args.json:
        _out(json.dumps(result, sort_keys=True, default=str))
    elif args.check:
        _out("%s: %s" % (PROG, result["outcome"]["message"]))
    else:
        _out("%s: restored the database %s from %s (as release %s left it before release %s migrated); "
             "the state before the restore is kept in %s"
             % (PROG, opts.sqlite_path, result["snapshot"], result["release"], result.get("replaced_by"),
                result.get("safety_snapshot", "-")))
    return EXIT_OK


def cmd_status(config: dict[str, t.Any], args: argparse.Namespace) -> int:
    opts = read_options(config)
    try:
        status = state.status(opts, socket.gethostname(), config.get("image_repository"), args.last)
    except DockerError as exc:
        raise CliError("cannot read the containers: %s" % exc, EXIT_FAILED)
    except UnsafePathError as exc:
        raise CliError("refusing to read the server's state: %s" % exc, EXIT_FAILED)
    holder, records, port = status["lock"], status["last_records"], status["upstream_port"]
    if args.json:
        _out(json.dumps(status, sort_keys=True, default=str))
        return EXIT_OK
    if status["live"]:
        info = status["live"]
        _out("%s on %s: release %s is live (%s, 127.0.0.1:%s, image %s)"
             % (opts.app_name, status["host"], info["release"], info["container"], port, info["image"]))
    else:
        _out("%s on %s: no release is live (upstream port %s)" % (opts.app_name, status["host"], port))
    for kept in status["kept"]:
        _out("  kept:  %s (%s, %s)" % (kept["release"], kept["container"], kept["state"]))
    if status["maintenance"]:
        _out("  maintenance: ON (nginx answers 503 with the maintenance page; deploy.sh maintenance off)")
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
COMMANDS = ("deploy", "rollback", "status", "restore-database") + cli_ops.COMMANDS


def build_parser() -> argparse.ArgumentParser:
    """No option names a file and none may be abbreviated: root runs this for the deploy user
    (sudo), with the configuration deploy.sh fixes."""
    parser = argparse.ArgumentParser(
        prog=PROG, allow_abbrev=False,
        description="Deploy, roll back or inspect this server's app with the greenlight swap engine "
                    "(the same engine as the greenlight.deploy.container_swap module).",
        epilog="Examples: deploy.sh 3f2c1ab | deploy.sh sha256:<digest> | deploy.sh rollback | "
               "deploy.sh rollback v1 | deploy.sh status")
    sub = parser.add_subparsers(dest="command", metavar="{%s}" % ",".join(COMMANDS))

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
    cli_ops.add_parsers(sub, common)  # logs, run, maintenance
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
                "restore-database": cmd_restore_database, **cli_ops.HANDLERS}
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
    sys.exit(main())  # pylint: disable=ansible-bad-function  # refuses: only deploy.sh knows the configuration file
