# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""deploy.sh's day-2 commands (registered by cli.py)::

    deploy.sh logs [--service NAME] [--release ID] [--lines N|all] [--since 10m] [--follow]
    deploy.sh run [--service NAME] [--no-tty] [--interactive] -- <command ...>
    deploy.sh run --command '<command line>'             # split like a shell would, never run by one
    deploy.sh maintenance on|off

All of ops.py's work: nothing here decides what serves. Root runs these for the deploy user (sudo),
so no option names a file and every value is checked before it reaches Docker or nginx.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import typing as t

from . import ops
from .cli_config import EXIT_FAILED, EXIT_OK, PROG, CliError, _err, _out, _printable, check_root_only, read_options
from .docker_api import DockerClient, DockerError
from .errors import ProxyError

COMMANDS = ("logs", "run", "maintenance")


def _actor(args: argparse.Namespace, default: str) -> str:
    return args.actor or os.environ.get("GREENLIGHT_DEPLOY_ACTOR") or default


def _writer(stream: t.TextIO) -> t.Callable[[str], None]:
    def write(text: str) -> None:
        stream.write(_printable(text))  # the app's log must not drive the reader's terminal
        stream.flush()
    return write


def cmd_logs(config: dict[str, t.Any], args: argparse.Namespace) -> int:
    opts = read_options(config)
    lines: t.Union[int, str] = args.lines
    if lines != "all":
        if not str(lines).isdigit():
            raise CliError("--lines must be a number or all, got %r" % (lines,))
        lines = int(lines)
    try:
        since = ops.parse_since(args.since)
    except ops.OpsError as exc:
        raise CliError(str(exc))
    docker = DockerClient(opts.docker_socket, timeout=None if args.follow else 60.0)
    try:
        target = ops.target_container(docker, opts, args.service, args.release)
        _err("%s: log of %s (release %s, %s)" % (PROG, target["Names"][0].lstrip("/"),
                                                 target["Labels"].get("greenlight.release"), target.get("State")))
        ops.stream_logs(docker, target["Id"], _writer(sys.stdout), _writer(sys.stderr), lines=lines, since=since,
                        follow=args.follow)
    except DockerError as exc:
        raise CliError("cannot read the log: %s" % exc, EXIT_FAILED)
    except ops.OpsError as exc:
        raise CliError(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


def cmd_run(config: dict[str, t.Any], args: argparse.Namespace) -> int:
    opts = read_options(config)
    command = list(args.argv or [])
    if command[:1] == ["--"]:
        command = command[1:]
    if args.command_line is not None:
        if command:
            raise CliError("give the command either after -- or with --command, not both")
        try:
            command = shlex.split(args.command_line)
        except ValueError as exc:
            raise CliError("--command: %s" % exc)
    tty = not args.no_tty and sys.stdin.isatty() and sys.stdout.isatty()
    docker_config = config.get("docker_config")
    if docker_config:
        check_root_only(docker_config, "docker_config")  # the client reads plugins and contexts from it
    _err("%s: running %s in a one-off container of the live release of %s%s"
         % (PROG, " ".join(shlex.quote(word) for word in command), opts.app_name, " (with a terminal)" if tty else ""))
    try:
        record = ops.run_one_off(DockerClient(opts.docker_socket), opts, command, tty=tty,
                                 interactive=tty or args.interactive, docker_command=config.get("docker_command") or "docker",
                                 docker_config=docker_config, service=args.service, actor=_actor(args, "deploy.sh run"),
                                 log=lambda message: _err("%s: %s" % (PROG, message)))
    except ops.OpsError as exc:
        raise CliError(str(exc), EXIT_FAILED)
    except DockerError as exc:
        raise CliError("cannot start the one-off container: %s" % exc, EXIT_FAILED)
    except KeyboardInterrupt:
        _err("%s: interrupted; the one-off container is removed and the run recorded in %s"
             % (PROG, opts.releases_log))
        return 130
    code = record.get("exit_code")
    _err("%s: the command exited %s (recorded in %s); its container is removed" % (PROG, code, opts.releases_log))
    return code if isinstance(code, int) and 0 <= code < 256 else EXIT_FAILED


def cmd_maintenance(config: dict[str, t.Any], args: argparse.Namespace) -> int:
    opts = read_options(config)
    try:
        record = ops.set_maintenance(opts, args.switch == "on", actor=_actor(args, "deploy.sh maintenance"))
    except ProxyError as exc:
        raise CliError("maintenance mode not switched %s: %s; nginx serves as before" % (args.switch, exc),
                       EXIT_FAILED)
    except OSError as exc:  # writing the include (e.g. a full disk): nothing was reloaded
        raise CliError("maintenance mode not switched %s: cannot write %s: %s; nginx serves as before"
                       % (args.switch, ops.maintenance_path(opts), exc.strerror or exc), EXIT_FAILED)
    if args.json:
        _out(json.dumps(record, sort_keys=True))
    elif args.switch == "on":
        _out("%s: maintenance mode is %s: nginx answers 503 with the maintenance page; the release keeps running "
             "and deploys keep it on; `deploy.sh maintenance off` ends it"
             % (PROG, "on" if record["changed"] else "already on"))
    else:
        _out("%s: maintenance mode is %s: nginx serves the live release"
             % (PROG, "off" if record["changed"] else "already off"))
    return EXIT_OK


HANDLERS = {"logs": cmd_logs, "run": cmd_run, "maintenance": cmd_maintenance}


def add_parsers(sub: t.Any, common: argparse.ArgumentParser) -> None:
    logs = sub.add_parser("logs", parents=[common], allow_abbrev=False,
                          help="the log of the live release's web container (or --service, --release)")
    logs.add_argument("--service", default="web", help="service name (default web)")
    logs.add_argument("--release", help="a kept release instead of the live one")
    logs.add_argument("--lines", default="100", help="lines from the end (default 100; all)")
    logs.add_argument("--since", help="only newer lines: 30s, 10m, 2h, 1d, an ISO date-time or a Unix time")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines (Ctrl-C ends)")

    run = sub.add_parser("run", parents=[common], allow_abbrev=False,
                         help="run a command in a one-off container of the live release (its env, mounts, network)")
    run.add_argument("--service", default="web", help="copy this service's container (default web)")
    run.add_argument("--no-tty", action="store_true", help="no terminal even when there is one")
    run.add_argument("--interactive", "-i", action="store_true", help="pass standard input without a terminal")
    run.add_argument("--command", dest="command_line", help="the command as one string (split like a shell would)")
    run.add_argument("argv", nargs=argparse.REMAINDER, help="-- then the command and its arguments")

    maintenance = sub.add_parser("maintenance", parents=[common], allow_abbrev=False,
                                 help="nginx answers 503 with the maintenance page (on) or serves again (off)")
    maintenance.add_argument("switch", choices=("on", "off"))
