# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Day-2 operations on a live app (deploy.sh logs, run, maintenance): which container, its log,
a one-off container of the live release, nginx's maintenance mode. What is live comes from
state.py (the one reader); nothing here changes what serves, and none of it takes the deploy lock
(a deploy may run meanwhile)."""

from __future__ import annotations

import codecs
import datetime
import re
import secrets
import signal
import struct
import subprocess
import threading
import time
import typing as t

from . import state
from .audit import append_jsonl, current_actor, utc_now
from .docker_api import DockerError
from .errors import SwapError
from .labels import LABEL_RELEASE, LABEL_SERVICE, SERVICE_WEB, label, running
from .paths import check_mount_sources
from .proxy_nginx import maintenance_file, maintenance_on, switch_maintenance
from .redact import redact
from .registry import docker_env

# Labels of a one-off container: not greenlight.app, so no deploy ever counts, cleans or prunes it.
LABEL_ONE_OFF = "greenlight.one-off-of"
SERVICE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
DURATION_RE = re.compile(r"^(\d{1,9})([smhd])$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class OpsError(SwapError):
    """A day-2 operation could not start (nothing live, bad argument); nothing was changed."""


# --------------------------------------------------------------------------------------------
# Which container
# --------------------------------------------------------------------------------------------
def target_container(docker: t.Any, opts: t.Any, service: str = SERVICE_WEB,
                     release: t.Optional[str] = None) -> dict[str, t.Any]:
    """The container of `service` of the live release (or of `release`, kept ones included):
    web is the one nginx serves (state.py); another service the newest of that release."""
    if not SERVICE_RE.match(service or ""):
        raise OpsError("--service %r is not a service name" % (service,))
    server = state.read_state(docker, opts.app_name, opts.upstream_file)
    wanted = release or server.live_release
    if not wanted:
        raise OpsError("no release of %s is live (deploy.sh status shows what is kept); name one with --release"
                       % opts.app_name)
    if service == SERVICE_WEB and not release:
        return server.live
    candidates = sorted((c for c in server.containers
                         if label(c, LABEL_SERVICE) == service and label(c, LABEL_RELEASE) == wanted),
                        key=lambda c: (running(c), c.get("Created", 0)), reverse=True)
    if not candidates:
        services = sorted({label(c, LABEL_SERVICE) for c in server.containers if label(c, LABEL_RELEASE) == wanted})
        raise OpsError("release %s of %s has no %s container (it has: %s)"
                       % (wanted, opts.app_name, service, ", ".join(s for s in services if s) or "none"))
    return candidates[0]


# --------------------------------------------------------------------------------------------
# Logs
# --------------------------------------------------------------------------------------------
def parse_since(value: t.Optional[str], now: t.Optional[float] = None) -> t.Optional[int]:
    """--since: 90s / 10m / 2h / 1d ago, an ISO date-time (UTC unless it says) or a Unix time."""
    if value is None:
        return None
    now = time.time() if now is None else now
    match = DURATION_RE.match(value)
    if match:
        return int(now - int(match.group(1)) * UNITS[match.group(2)])
    if re.match(r"^\d{9,11}$", value):
        return int(value)
    try:
        when = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise OpsError("--since %r: give a duration (30s, 10m, 2h, 1d), an ISO date-time (2026-11-29T21:00) or a "
                       "Unix time" % value) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return int(when.timestamp())


def stream_logs(docker: t.Any, container_id: str, write_out: t.Callable[[str], None],
                write_err: t.Callable[[str], None], lines: t.Union[int, str] = 100, since: t.Optional[int] = None,
                follow: bool = False) -> None:
    """Copy a container's log to write_out/write_err (its stdout and stderr), chunk by chunk as
    Docker sends it; with follow until the container stops or the reader interrupts."""
    response, conn = docker.stream_logs(container_id, tail=lines, since=since, follow=follow)
    decoders = {1: codecs.getincrementaldecoder("utf-8")("replace"), 2: codecs.getincrementaldecoder("utf-8")("replace")}
    writers = {1: write_out, 2: write_err}
    buffer = b""
    raw = None  # a container with a TTY sends its output without frame headers
    try:
        while True:
            chunk = response.read1(65536) if hasattr(response, "read1") else response.read(65536)
            if not chunk:
                break
            buffer += chunk
            if raw is None and len(buffer) >= 8:
                raw = not (buffer[0] in (0, 1, 2) and buffer[1:4] == b"\x00\x00\x00")
            if raw:
                write_out(decoders[1].decode(buffer))
                buffer = b""
                continue
            while len(buffer) >= 8:
                (size,) = struct.unpack(">I", buffer[4:8])
                if len(buffer) < 8 + size:
                    break
                stream = 2 if buffer[0] == 2 else 1
                writers[stream](decoders[stream].decode(buffer[8:8 + size]))
                buffer = buffer[8 + size:]
    finally:
        conn.close()
    if buffer:
        write_out(decoders[1].decode(buffer, final=True))


# --------------------------------------------------------------------------------------------
# One-off commands
# --------------------------------------------------------------------------------------------
def refuse_root_user(live: dict[str, t.Any]) -> None:
    """A one-off command runs what the caller (the deploy user, through sudo) chooses. As root in
    the container it could leave a set-uid file in the app's bind-mounted data for the caller to
    run on the host: refused unless the image names a non-root USER (the example image does)."""
    user = str((live.get("Config") or {}).get("User") or "").split(":", 1)[0].strip()
    if user in ("", "0", "root"):
        raise OpsError("the live release's image runs as root (no USER, or USER %s): deploy.sh run does not run "
                       "commands as root in a container with the app's data mounted; give the image a non-root "
                       "USER (e.g. USER 10001:10001 in its Dockerfile) and deploy it" % (user or "unset"))


def one_off_config(live: dict[str, t.Any], app_name: str, release: str, command: t.Sequence[str],
                   tty: bool, interactive: bool) -> dict[str, t.Any]:
    """A container like `live` (its image, environment, mounts, network, user, working directory)
    running `command`: no ports, no restart, not labelled as the app's (no deploy touches it). The
    environment goes to Docker in the API request, never on a command line."""
    config = live.get("Config") or {}
    host = live.get("HostConfig") or {}
    host_config = {"Binds": list(host.get("Binds") or []), "NetworkMode": host.get("NetworkMode") or "default",
                   "RestartPolicy": {"Name": "no"}, "SecurityOpt": ["no-new-privileges"]}
    if host.get("ExtraHosts"):
        host_config["ExtraHosts"] = list(host["ExtraHosts"])
    created = {"Image": live.get("Image"), "Cmd": list(command), "Env": list(config.get("Env") or []),
               "Labels": {LABEL_ONE_OFF: app_name, LABEL_RELEASE: release},
               "Tty": tty, "OpenStdin": interactive, "StdinOnce": interactive, "AttachStdin": interactive,
               "AttachStdout": True, "AttachStderr": True, "HostConfig": host_config}
    for key in ("User", "WorkingDir"):
        if config.get(key):
            created[key] = config[key]
    return created


def run_one_off(docker: t.Any, opts: t.Any, command: t.Sequence[str], tty: bool, interactive: bool,
                docker_command: str = "docker", docker_config: t.Optional[str] = None, service: str = SERVICE_WEB,
                actor: t.Optional[str] = None, log: t.Callable[[str], None] = lambda _m: None) -> dict[str, t.Any]:
    """Run `command` in a one-off container of the live release, attached to this terminal
    (`docker start --attach`, with --interactive when `interactive`), remove it afterwards and
    append an audit record (who, command, exit code; never the environment). Returns the record."""
    if not command:
        raise OpsError("name the command to run after --, e.g. deploy.sh run -- python manage.py createsuperuser")
    target = target_container(docker, opts, service)
    release = label(target, LABEL_RELEASE) or "?"
    live = docker.inspect_container(target["Id"])
    env = list((live.get("Config") or {}).get("Env") or [])
    refuse_root_user(live)
    check_mount_sources((live.get("HostConfig") or {}).get("Binds") or [])
    container_name = "%s-run-%s-%s" % (opts.app_name, release, secrets.token_hex(3))
    record: dict[str, t.Any] = {"time": utc_now(), "app": opts.app_name, "actor": current_actor(actor),
                                "action": "run", "release": release, "service": service,
                                "command": [redact(word, env) for word in command], "tty": tty,
                                "container_name": container_name}
    started = time.monotonic()
    container_id = None
    # A closed SSH session (SIGHUP) or a kill (SIGTERM) ends the command like Ctrl-C: the container
    # is removed and the record written (the finally below), never left running unrecorded.
    previous = {}
    if threading.current_thread() is threading.main_thread():  # signal handlers: main thread only
        previous = {signum: signal.signal(signum, _interrupt) for signum in (signal.SIGHUP, signal.SIGTERM)}
    try:
        container_id = docker.create_container(container_name, one_off_config(live, opts.app_name, release, command,
                                                                              tty, interactive))
        log("one-off container %s of release %s" % (container_name, release))
        argv = [docker_command, "-H", "unix://" + opts.docker_socket, "start", "--attach"]
        if interactive:
            argv.append("--interactive")
        try:
            subprocess.run(argv + [container_id], env=docker_env(docker_config), check=False)
        except OSError as exc:
            raise OpsError("cannot run %s: %s" % (docker_command, exc.strerror or exc)) from exc
        inspected = docker.inspect_container(container_id)
        exit_code = (inspected.get("State") or {}).get("ExitCode")
        if (inspected.get("State") or {}).get("Running"):  # the client was killed: the command must not linger
            docker.stop_container(container_id, opts.stop_grace_seconds)
            exit_code = (docker.inspect_container(container_id).get("State") or {}).get("ExitCode")
        record.update(exit_code=exit_code, result="ok" if exit_code == 0 else "failed")
    except KeyboardInterrupt:
        record.update(exit_code=130, result="interrupted")
        raise
    except (DockerError, OpsError) as exc:
        record.update(exit_code=None, result="failed", error=redact(str(exc), env))
        raise OpsError(record["error"]) from exc
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if container_id:
            try:
                docker.remove_container(container_id, force=True)
            except DockerError as exc:
                log("could not remove the one-off container %s: %s" % (container_name, exc))
        record["seconds"] = round(time.monotonic() - started, 2)
        try:
            append_jsonl(opts.releases_log, record)
        except OSError as exc:  # e.g. a full disk: the command ran; say so rather than hide its exit code
            log("could not record the one-off command in %s: %s" % (opts.releases_log, exc.strerror or exc))
    return record


def _interrupt(signum: int, _frame: t.Any) -> None:
    raise KeyboardInterrupt("signal %d" % signum)


# --------------------------------------------------------------------------------------------
# Maintenance mode
# --------------------------------------------------------------------------------------------
def maintenance_path(opts: t.Any) -> str:
    return maintenance_file(opts.upstream_file, opts.app_name)


def set_maintenance(opts: t.Any, on: bool, actor: t.Optional[str] = None) -> dict[str, t.Any]:
    """Switch nginx's maintenance mode of the app on or off (graceful reload: no request in flight
    is lost); the release keeps running. Appends an audit record when the switch changed it."""
    path = maintenance_path(opts)
    since = utc_now()
    changed = switch_maintenance(path, opts.app_name, on, since, opts.proxy_test_command, opts.proxy_reload_command)
    record = {"time": since, "app": opts.app_name, "actor": current_actor(actor), "action": "maintenance",
              "result": "ok", "maintenance": "on" if on else "off", "changed": changed, "file": path}
    if changed:
        append_jsonl(opts.releases_log, record)
    return record


def maintenance_state(opts: t.Any) -> bool:
    return maintenance_on(maintenance_path(opts))
