# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The swap engine: put one image live on one server with zero downtime.

Pure Python, standard library only, no Ansible imports: the Ansible module ``container_swap`` and
the server-side command behind ``deploy.sh`` are both thin front ends over :func:`run_swap`.

Phases (one call per server per deploy): plan -> lock -> cleanup -> snapshot -> pre_switch ->
static -> start -> health -> switch -> drain -> stop_old -> services -> prune -> record.
See docs/container_swap.md for the full contract.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import datetime
import errno
import fcntl
import getpass
import hashlib
import http.client
import json
import os
import posixpath
import re
import secrets
import shlex
import socket
import sqlite3
import stat
import tarfile
import time
import typing as t

from ._docker_api import DEFAULT_SOCKET, DockerClient, DockerError, NotFound
from ._proxy_nginx import (
    ProxyError,
    ProxyReloadError,
    as_argv,
    fetch_release,
    read_upstream_port,
    switch_upstream,
    verify,
    wait_drained,
)

# Label keys (docs/CONTRACTS.md); env values are never put into labels.
LABEL_APP = "greenlight.app"
LABEL_RELEASE = "greenlight.release"
LABEL_SERVICE = "greenlight.service"
LABEL_CONFIG_HASH = "greenlight.config-hash"
LABEL_PORT = "greenlight.port"
LABEL_IMAGE = "greenlight.image"

SERVICE_WEB = "web"
ONE_OFF_SERVICES = ("pre-switch", "static")
RESERVED_SERVICES = (SERVICE_WEB,) + ONE_OFF_SERVICES

PHASES = ("plan", "lock", "cleanup", "snapshot", "pre_switch", "static", "start", "health", "switch", "drain",
          "stop_old", "services", "prune", "record")
# Phases after which the interrupted run may have moved traffic (see _cleanup).
TRAFFIC_PHASES = ("switch", "drain", "stop_old")

# Whole-value patterns end in \Z, not $ (which accepts a trailing newline), and are used with
# fullmatch, so a value with a newline at its end is refused however a pattern is applied.
APP_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*\Z")
RELEASE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
SERVICE_NAME_RE = APP_NAME_RE
VOLUME_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]+\Z")
# An origin-form request target (RFC 3986 path and query): what health_path and the path of
# proxy_verify_url must be, so that a space or a '#' is refused before anything runs.
_PCHAR = r"(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})"
URL_PATH_RE = re.compile(r"^/(?:%s|/)*(?:\?(?:%s|[/?])*)?\Z" % (_PCHAR, _PCHAR))
VERIFY_URL_RE = re.compile(r"^http://(?:127\.0\.0\.1|localhost)(?::(?P<port>[0-9]{1,5}))?(?P<path>/.*)\Z", re.DOTALL)

# Image reference grammar (distribution/reference, without IPv6 registries).
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = r"(?:%s(?:\.%s)*(?::[0-9]+)?)" % (_DOMAIN_COMPONENT, _DOMAIN_COMPONENT)
_PATH_COMPONENT = r"(?:[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)"
_NAME = r"(?:(?:%s/)?%s(?:/%s)*)" % (_DOMAIN, _PATH_COMPONENT, _PATH_COMPONENT)
_TAG = r"(?:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})"
_DIGEST = r"(?:[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})"
IMAGE_REFERENCE_RE = re.compile(r"^(?P<name>%s)(?::(?P<tag>%s))?(?:@(?P<digest>%s))?\Z" % (_NAME, _TAG, _DIGEST))
IMAGE_ID_RE = re.compile(r"^sha256:[0-9a-f]{64}\Z")

# Docker's env file reader (docker/cli pkg/kvfile) reads lines with bufio.Scanner: split on "\n"
# only (one "\r" before it dropped), a line of 64 KiB or more refuses the whole file, leading
# whitespace trimmed with Go's unicode.IsSpace (which, unlike str.isspace, excludes \x1c-\x1f).
ENV_LINE_MAX_BYTES = 65536
_GO_SPACES = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
             "\u2028\u2029\u202f\u205f\u3000"
# The env file is the deploy user's (app_env): root reads no more than this of it (a file truncated
# to gigabytes would otherwise be read into memory while the deploy lock is held).
ENV_FILE_MAX_BYTES = 1024 * 1024
# Env values shorter than this are not redacted from container output (see redact()).
REDACT_MIN_LENGTH = 4


class SwapError(Exception):
    """A swap failed; `result` holds the partial result (also written to releases.jsonl)."""

    def __init__(self, message: str, result: dict[str, t.Any] | None = None) -> None:
        super().__init__(message)
        self.result = result or {}


class OptionsError(SwapError, ValueError):
    """The options are invalid; nothing was touched."""


class LockTimeout(SwapError):
    """Another deploy holds the lock."""


class UnsafePathError(SwapError, OSError):
    """A path the engine would open is a symbolic link, a hard link, not a regular file, or owned by
    a stranger: refused, because another user (the app, the deploy user) may have planted it to make
    root read or write a file it names. An OSError too, so every file error handler sees it."""


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class ServiceSpec:
    """An extra service run from the same image (worker, beat...)."""

    name: str
    command: t.Union[str, list]
    singleton: bool = False


@dataclasses.dataclass
class SwapOptions:
    """Every option of the engine; see docs/container_swap.md. Paths left None are derived."""

    app_name: str
    image: t.Optional[str] = None
    mode: str = "deploy"
    rollback_release: t.Optional[str] = None
    release: t.Optional[str] = None
    app_dir: t.Optional[str] = None
    env_file: t.Optional[str] = None
    mounts: list = dataclasses.field(default_factory=list)
    container_port: int = 8000
    host_ports: list = dataclasses.field(default_factory=lambda: [8001, 8002])
    health_path: str = "/health"
    health_timeout: float = 60.0
    health_interval: float = 0.25
    health_statuses: list = dataclasses.field(default_factory=lambda: [200])
    pre_switch_commands: list = dataclasses.field(default_factory=list)
    pre_switch_timeout: float = 600.0
    static_source: t.Optional[str] = None
    static_root: t.Optional[str] = None
    sqlite_path: t.Optional[str] = None
    restore_on_failure: bool = True
    backups_dir: t.Optional[str] = None
    backups_to_keep: int = 5
    upstream_file: t.Optional[str] = None
    proxy_test_command: t.Union[str, list, None] = "nginx -t"
    proxy_reload_command: t.Union[str, list, None] = "nginx -s reload"
    proxy_verify_url: t.Optional[str] = None
    proxy_verify_timeout: float = 10.0
    drain_seconds: float = 30.0
    drain_until_idle: bool = True
    stop_grace_seconds: int = 10
    releases_to_keep: int = 3
    lock_file: t.Optional[str] = None
    lock_timeout: float = 60.0
    releases_log: t.Optional[str] = None
    services: list = dataclasses.field(default_factory=list)
    labels: dict = dataclasses.field(default_factory=dict)
    restart_policy: str = "unless-stopped"
    docker_socket: str = DEFAULT_SOCKET
    actor: t.Optional[str] = None
    check_mode: bool = False


OPTION_NAMES = tuple(f.name for f in dataclasses.fields(SwapOptions))
RESTART_POLICIES = ("no", "always", "unless-stopped", "on-failure")


def parse_image_reference(reference: str) -> dict[str, t.Optional[str]]:
    """Split an image reference into name, tag and digest; raise ValueError when malformed."""
    if not isinstance(reference, str) or not reference:
        raise ValueError("image must be a non-empty string")
    if IMAGE_ID_RE.fullmatch(reference):
        return {"name": None, "tag": None, "digest": None, "id": reference}
    match = IMAGE_REFERENCE_RE.fullmatch(reference)
    if match:
        # Like docker: the first part is a registry only when it looks like one; otherwise lowercase.
        first, _sep, rest = match.group("name").partition("/")
        if rest and not ("." in first or ":" in first or first == "localhost") and first.lower() != first:
            match = None
    if not match or len(reference) > 512:
        raise ValueError("image %r is not a valid image reference (expected name[:tag][@sha256:digest])" % reference)
    return {"name": match.group("name"), "tag": match.group("tag"), "digest": match.group("digest"), "id": None}


def derive_release(reference: str, image_id: str) -> str:
    """Release id from the tag, else the digest, else the image id (12 hex characters)."""
    parts = parse_image_reference(reference)
    if parts["tag"] and parts["tag"] != "latest":
        return parts["tag"]
    if parts["digest"]:
        return parts["digest"].split(":", 1)[1][:12]
    return image_id.split(":", 1)[-1][:12]


def _is_int(value: t.Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: t.Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _valid_command(command: t.Any) -> bool:
    if isinstance(command, str):
        try:
            return bool(shlex.split(command))
        except ValueError:
            return False
    return isinstance(command, (list, tuple)) and bool(command) and all(isinstance(p, str) for p in command)


def parse_mount(mount: str) -> tuple[str, str, str]:
    """`host:container[:ro|rw]` -> (host, container, mode); raise ValueError when malformed."""
    parts = mount.split(":") if isinstance(mount, str) else []
    if len(parts) not in (2, 3):
        raise ValueError("mount %r must be host:container[:ro|rw]" % (mount,))
    host, container = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else "rw"
    if not (host.startswith("/") or VOLUME_NAME_RE.fullmatch(host)):
        raise ValueError("mount %r: host side must be an absolute path or a volume name" % mount)
    if not container.startswith("/"):
        raise ValueError("mount %r: container side must be an absolute path" % mount)
    if mode not in ("ro", "rw"):
        raise ValueError("mount %r: mode must be ro or rw" % mount)
    return host, container, mode


def options_from_dict(values: t.Union[dict, SwapOptions]) -> SwapOptions:
    """Build validated options from a plain dict (unknown keys are errors) and fill derived paths."""
    if isinstance(values, SwapOptions):
        values = dataclasses.asdict(values)
    unknown = sorted(set(values) - set(OPTION_NAMES))
    if unknown:
        raise OptionsError("unknown option(s): %s" % ", ".join(unknown))
    if "app_name" not in values or values["app_name"] is None:
        raise OptionsError("app_name is required")
    clean = {k: v for k, v in values.items() if v is not None or k in ("proxy_test_command", "proxy_reload_command")}
    for key in ("mounts", "host_ports", "health_statuses", "pre_switch_commands", "services"):
        if key in clean:
            clean[key] = list(clean[key])
    services = []
    for item in clean.get("services", []):
        if isinstance(item, ServiceSpec):
            services.append(item)
        elif isinstance(item, dict):
            extra = sorted(set(item) - {"name", "command", "singleton"})
            if extra:
                raise OptionsError("services: unknown key(s) %s in %r" % (", ".join(extra), item))
            services.append(ServiceSpec(name=item.get("name"), command=item.get("command"),
                                        singleton=bool(item.get("singleton"))))
        else:
            raise OptionsError("services: each entry must be a dict with name, command, singleton")
    clean["services"] = services
    opts = SwapOptions(**clean)
    validate_options(opts)
    app_dir = opts.app_dir or "/opt/%s" % opts.app_name
    opts.app_dir = app_dir
    opts.lock_file = opts.lock_file or os.path.join(app_dir, "deploy.lock")
    opts.releases_log = opts.releases_log or os.path.join(app_dir, "releases.jsonl")
    opts.backups_dir = opts.backups_dir or os.path.join(app_dir, "backups")
    opts.upstream_file = opts.upstream_file or "/etc/nginx/greenlight/%s-upstream.conf" % opts.app_name
    if opts.static_source and not opts.static_root:
        opts.static_root = "/var/www/%s/static" % opts.app_name
    return opts


def validate_options(opts: SwapOptions) -> None:
    """Collect every problem into one OptionsError so the user fixes them in one go."""
    errors = []
    if not isinstance(opts.app_name, str) or not APP_NAME_RE.fullmatch(opts.app_name):
        errors.append("app_name %r must match %s" % (opts.app_name, APP_NAME_RE.pattern))
    if opts.mode not in ("deploy", "rollback"):
        errors.append("mode must be deploy or rollback, got %r" % (opts.mode,))
    if opts.mode == "deploy":
        if not opts.image:
            errors.append("image is required when mode=deploy")
        else:
            try:
                tag = parse_image_reference(opts.image)["tag"]
            except ValueError as exc:
                errors.append(str(exc))
            else:
                # The tag becomes the release id (labels, rollback); one that cannot be one would
                # deploy but never roll back.
                if opts.release is None and tag and tag != "latest" and not RELEASE_RE.fullmatch(tag):
                    errors.append("the tag of image %r cannot be a release id (%s: a letter or digit first, at most "
                                  "64 characters); use such a tag, or name the release with release"
                                  % (opts.image, RELEASE_RE.pattern))
        if opts.rollback_release is not None:
            errors.append("rollback_release is only used with mode=rollback")
    elif opts.mode == "rollback":
        if opts.image:
            errors.append("image is not used with mode=rollback (the kept release brings its own image)")
        if opts.release:
            errors.append("release is not used with mode=rollback; name the target with rollback_release")
    for key in ("release", "rollback_release"):
        value = getattr(opts, key)
        if value is not None and (not isinstance(value, str) or not RELEASE_RE.fullmatch(value)):
            errors.append("%s %r must match %s" % (key, value, RELEASE_RE.pattern))
    for mount in opts.mounts:
        try:
            parse_mount(mount)
        except ValueError as exc:
            errors.append(str(exc))
    if not _is_int(opts.container_port) or not 1 <= opts.container_port <= 65535:
        errors.append("container_port must be an integer 1-65535")
    if (len(opts.host_ports) != 2 or not all(_is_int(p) and 1 <= p <= 65535 for p in opts.host_ports)
            or opts.host_ports[0] == opts.host_ports[1]):
        errors.append("host_ports must be two different ports 1-65535, got %r" % (opts.host_ports,))
    if not isinstance(opts.health_path, str) or not URL_PATH_RE.fullmatch(opts.health_path):
        errors.append("health_path must be a URL path starting with / (letters, digits, -._~!$&'()*+,;=:@/?, "
                      "%%XX escapes; no spaces, '#' or control characters), got %r" % (opts.health_path,))
    for key in ("health_timeout", "health_interval", "pre_switch_timeout", "proxy_verify_timeout", "lock_timeout"):
        value = getattr(opts, key)
        if not _is_number(value) or value <= 0:
            errors.append("%s must be a positive number" % key)
    if not _is_number(opts.drain_seconds) or opts.drain_seconds < 0:
        errors.append("drain_seconds must be >= 0")
    for key in ("stop_grace_seconds", "releases_to_keep", "backups_to_keep"):
        value = getattr(opts, key)
        if not _is_int(value) or value < 0:
            errors.append("%s must be an integer >= 0" % key)
    if not opts.health_statuses or not all(_is_int(s) and 100 <= s <= 599 for s in opts.health_statuses):
        errors.append("health_statuses must be a non-empty list of HTTP status codes")
    for command in opts.pre_switch_commands:
        if not _valid_command(command):
            errors.append("pre_switch_commands: %r is not a command (argv list or string)" % (command,))
    for key in ("proxy_test_command", "proxy_reload_command"):
        value = getattr(opts, key)
        if value is not None and value != "" and not _valid_command(value):
            errors.append("%s: %r is not a command" % (key, value))
    if opts.proxy_verify_url is not None:
        verify_match = VERIFY_URL_RE.fullmatch(opts.proxy_verify_url) if isinstance(opts.proxy_verify_url, str) else None
        if not (verify_match and URL_PATH_RE.fullmatch(verify_match.group("path"))
                and 1 <= int(verify_match.group("port") or 80) <= 65535):
            errors.append("proxy_verify_url must be http://127.0.0.1:<port>/<path> with a URL path (no spaces, '#' "
                          "or control characters), got %r" % (opts.proxy_verify_url,))
    if opts.static_source is not None and not (isinstance(opts.static_source, str) and opts.static_source.startswith("/")):
        errors.append("static_source must be an absolute path inside the image")
    for key in ("app_dir", "env_file", "static_root", "sqlite_path", "backups_dir", "upstream_file", "lock_file",
                "releases_log"):
        value = getattr(opts, key)
        if value is not None and (not isinstance(value, str) or not value.startswith("/")):
            errors.append("%s must be an absolute path, got %r" % (key, value))
    names = set()
    for service in opts.services:
        if not isinstance(service.name, str) or not SERVICE_NAME_RE.fullmatch(service.name):
            errors.append("services: name %r must match %s" % (service.name, SERVICE_NAME_RE.pattern))
        elif service.name in RESERVED_SERVICES:
            errors.append("services: name %r is reserved" % service.name)
        elif service.name in names:
            errors.append("services: name %r is used twice" % service.name)
        names.add(service.name)
        if not _valid_command(service.command):
            errors.append("services: %r has no valid command" % (service.name,))
    if not isinstance(opts.labels, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in opts.labels.items()):
        errors.append("labels must be a dict of strings")
    elif any(k.startswith("greenlight.") for k in opts.labels):
        errors.append("labels: keys starting with greenlight. are set by the engine")
    if opts.restart_policy not in RESTART_POLICIES:
        errors.append("restart_policy must be one of %s" % ", ".join(RESTART_POLICIES))
    if errors:
        raise OptionsError("invalid options: " + "; ".join(errors))


# --------------------------------------------------------------------------------------------
# Small pure helpers (unit tested)
# --------------------------------------------------------------------------------------------
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


def config_hash(image_id: str, service: str, command: t.Any, container_port: t.Optional[int], mounts: list,
                env_sha256: t.Optional[str], restart_policy: str, labels: dict) -> str:
    """Stable hash of everything that shapes a container except its host port and release id."""
    payload = {
        "image_id": image_id,
        "service": service,
        "command": as_argv(command) if command else None,
        "container_port": container_port,
        "mounts": list(mounts),
        "env_sha256": env_sha256,
        "restart_policy": restart_policy,
        "labels": dict(sorted(labels.items())),
    }
    encoded = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(encoded).hexdigest()[:16]


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def current_actor(actor: t.Optional[str] = None) -> dict[str, t.Any]:
    try:
        user = os.environ.get("SUDO_USER") or getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    info = {"user": user, "host": socket.gethostname(), "pid": os.getpid()}
    if actor:
        info["by"] = actor
    return info


def holder_message(lock_file: str, holder: t.Optional[dict[str, t.Any]], waited: float) -> str:
    """The message a blocked deploy shows: who holds the lock and what it is doing."""
    if not holder:
        return "another deploy holds %s (holder details unreadable); waited %.1fs" % (lock_file, waited)
    return ("another deploy holds %s: pid %s (user %s on %s), %s of release %s, phase %s, since %s; waited %.1fs. "
            "Wait for it to finish, or re-run later; the lock frees itself when that process ends."
            % (lock_file, holder.get("pid"), holder.get("user"), holder.get("host"), holder.get("action", "deploy"),
               holder.get("release"), holder.get("phase"), holder.get("since"), waited))


def audit_record(result: dict[str, t.Any], app_name: str, actor: dict[str, t.Any],
                 env: t.Sequence[str] = ()) -> dict[str, t.Any]:
    """The line appended to releases.jsonl (the module returns the same fields), every env value
    redacted from the texts an app or a failure can put there (FREE_TEXT_KEYS, see redact())."""
    keys = ("action", "changed", "release", "previous_release", "image", "image_id", "image_digest", "live_port",
            "container_id", "container_name", "services", "snapshot", "phases", "health_attempts", "rolled_back",
            "failed_phase", "error", "adopted", "proxy_uncertain")
    record = {"time": utc_now(), "app": app_name, "actor": actor,
              "result": "failed" if result.get("failed_phase") else "ok"}
    for key in keys:
        if key in result:
            record[key] = result[key]
    return redact_free_text(record, env)


# --------------------------------------------------------------------------------------------
# Files in directories other users can write
# --------------------------------------------------------------------------------------------
def _link_message(path: str) -> str:
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
            raise UnsafePathError(_link_message(path)) from None
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


def _refuse_links(*paths: str) -> t.Optional[os.stat_result]:
    """Refuse any of `paths` that is a symbolic link or not a regular file; absent ones are fine.
    Returns the lstat of the first path (None when it is absent)."""
    first = None
    for number, path in enumerate(paths):
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(info.st_mode):
            raise UnsafePathError(_link_message(path))
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePathError("%s is not a regular file; refusing to open it" % path)
        if number == 0:
            first = info
    return first


def _refuse_linked_dir(path: str) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise UnsafePathError(_link_message(path))
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


def _traverse_groups(directory: str, uid: int) -> t.Optional[list[int]]:
    """The groups uid needs to reach `directory` (e.g. the deploy group for /opt/<app>), or None
    when it cannot reach it at all."""
    groups = set()
    path = os.path.realpath(directory)
    while True:
        info = os.stat(path)
        if not (info.st_mode & (stat.S_IXUSR if info.st_uid == uid else stat.S_IXOTH)):
            if info.st_uid == uid or not info.st_mode & stat.S_IXGRP:
                return None
            groups.add(info.st_gid)
        if path == os.path.dirname(path):
            return sorted(groups)
        path = os.path.dirname(path)


@contextlib.contextmanager
def _filesystem_identity(db_path: str, db_owner: os.stat_result) -> t.Iterator[None]:
    """Open the database's files as the owner of its directory (setfsuid/setfsgid: this thread
    only; supplementary groups only those needed to reach the directory). A link the app plants in
    its own directory, even after the checks, then reaches only what the app could reach itself.
    The directory's uid and gid, not the file's: the app can chgrp its file to any group of its
    image. Fails closed (UnsafePathError naming the path and the cause) whenever that identity
    cannot be taken; never goes on as root. A no-op when this process is not root."""
    directory = os.path.dirname(os.path.abspath(db_path))
    if os.geteuid() != 0:
        yield  # not root: the files are opened with no more than this user's rights anyway
        return
    _refuse_linked_dir(directory)
    info = os.stat(directory)
    uid, gid = info.st_uid, info.st_gid
    if db_owner.st_uid == 0:
        raise UnsafePathError(
            "%s is owned by root: a database owned by root (an app running as root in its container) cannot be "
            "snapshotted or restored safely, since root would open it through any link the app plants. Run the app "
            "as a non-root uid (app_host_container_uid) and chown the database to it, or set "
            "deploy_script_sqlite_path to \"\" (container_swap: sqlite_path) to skip snapshots" % db_path)
    if uid == 0:
        raise UnsafePathError(
            "the data directory %s is owned by root: the data directory must be owned by the app's uid and let it "
            "in (app_host lays it out so: owner app_host_container_uid, mode 0750); chown it and re-run" % directory)
    if gid == 0:
        raise UnsafePathError(
            "the data directory %s is in group root (gid 0): the database would be opened with root's group. "
            "chgrp it back to the deploy group (as app_host lays it out) and re-run" % directory)
    reach = _traverse_groups(directory, uid)
    if reach is None:
        raise UnsafePathError(
            "uid %d cannot reach its data directory %s (mode %04o): the data directory must be owned by the app's "
            "uid and let it in (owner app_host_container_uid, mode 0750), and every directory above it must let "
            "it through; refusing to open the database as root. chmod 0750 %s (or re-run playbooks/setup.yaml) "
            "and re-run" % (uid, directory, stat.S_IMODE(info.st_mode), directory))
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "setfsuid") or not hasattr(libc, "setfsgid"):
        raise UnsafePathError("cannot open %s as its directory's owner (uid %d): this C library has no "
                              "setfsuid/setfsgid; refusing to open it as root" % (db_path, uid))
    groups = os.getgroups()
    groups_changed = False
    try:
        try:
            os.setgroups(reach)
        except PermissionError as exc:  # no CAP_SETGID (a restricted container)
            raise UnsafePathError("cannot open %s as uid %d: setgroups refused (%s; the engine needs CAP_SETGID); "
                                  "refusing to open it as root" % (db_path, uid, exc.strerror)) from None
        groups_changed = True
        libc.setfsgid(gid)
        libc.setfsuid(uid)
        # An invalid id (-1) changes nothing and returns the current one.
        if libc.setfsuid(-1) != uid or libc.setfsgid(-1) != gid:
            raise UnsafePathError("cannot open %s as uid %d: cannot switch the filesystem identity to %d:%d; "
                                  "refusing to open it as root" % (db_path, uid, uid, gid))
        yield
    finally:
        libc.setfsuid(os.geteuid())
        libc.setfsgid(os.getegid())
        if groups_changed:
            os.setgroups(groups)


def append_jsonl(path: str, record: dict[str, t.Any]) -> None:
    """Append one JSON line: whole or not at all (a short write on a full disk is cut back off)."""
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, mode=0o750, exist_ok=True)
    line = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")
    fd = open_state_file(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        if start and os.pread(fd, 1, start - 1) != b"\n":
            line = b"\n" + line  # a torn line (an older version killed mid-write) stays on its own
        written = 0
        try:
            while written < len(line):  # O_APPEND: each write lands at the end
                count = os.write(fd, line[written:])
                if count <= 0:
                    raise OSError(errno.EIO, "the write made no progress")
                written += count
            os.fsync(fd)
        except OSError as exc:
            if written and os.fstat(fd).st_size == start + written:
                os.ftruncate(fd, start)  # nobody appended meanwhile: take the partial line back
            raise OSError(exc.errno, "cannot append to %s (%s); the line was not written"
                          % (path, exc.strerror or exc)) from exc
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# Lock
# --------------------------------------------------------------------------------------------
class DeployLock:
    """flock(2) on the lock file: the kernel frees it when the holder dies, so it cannot go stale.
    The file's content is the holder's details (JSON), rewritten at every phase."""

    def __init__(self, path: str, info: dict[str, t.Any]) -> None:
        self.path = path
        self.info = dict(info)
        self.fd: t.Optional[int] = None
        self.previous: t.Optional[dict[str, t.Any]] = None

    @staticmethod
    def read_holder(path: str) -> t.Optional[dict[str, t.Any]]:
        for _attempt in range(5):
            try:
                with os.fdopen(open_state_file(path, os.O_RDONLY), encoding="utf-8") as handle:
                    content = handle.read()
            except (FileNotFoundError, UnsafePathError):
                return None
            if content.strip():
                try:
                    return json.loads(content)
                except ValueError:
                    pass
            time.sleep(0.02)  # the holder may be rewriting it right now
        return None

    def acquire(self, timeout: float, poll: float = 0.1) -> None:
        parent = os.path.dirname(self.path)
        if parent:
            os.makedirs(parent, mode=0o750, exist_ok=True)
        fd = open_state_file(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        started = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise
            waited = time.monotonic() - started
            if waited >= timeout:
                os.close(fd)
                raise LockTimeout(holder_message(self.path, self.read_holder(self.path), waited))
            time.sleep(poll)
        self.fd = fd
        content = os.pread(fd, 65536, 0)
        try:
            previous = json.loads(content.decode("utf-8")) if content.strip() else None
        except ValueError:
            previous = None
        # A holder that ended cleanly marks the file "released"; anything else is an interrupted run.
        self.previous = previous if isinstance(previous, dict) and not previous.get("released") else None
        self._write()

    def _write(self) -> None:
        if self.fd is None:
            return
        data = json.dumps(self.info, sort_keys=True).encode("utf-8")
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def update(self, **fields: t.Any) -> None:
        self.info.update(fields)
        self._write()

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.info.update({"released": True, "phase": "done", "released_at": utc_now()})
            self._write()
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


# --------------------------------------------------------------------------------------------
# Static files and SQLite
# --------------------------------------------------------------------------------------------
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_dir_below(parent_fd: int, name: str, shown: str, create: bool) -> int:
    """openat(parent_fd, name) of a directory, never through a symbolic link (a link planted there
    is refused, naming `shown`); created (0755 before umask) when missing and `create`."""
    for _attempt in range(2):
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            if not create:
                raise
            try:
                os.mkdir(name, 0o755, dir_fd=parent_fd)
            except FileExistsError:
                pass  # made meanwhile: open it (again, never through a link)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePathError(_link_message(shown)) from None
            if exc.errno == errno.ENOTDIR:
                try:
                    linked = stat.S_ISLNK(os.lstat(name, dir_fd=parent_fd).st_mode)
                except OSError:
                    linked = False
                raise UnsafePathError(_link_message(shown) if linked else "%s is not a directory; refusing to "
                                      "extract static files into it" % shown) from None
            raise
    return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)


def _same_content(dir_fd: int, name: str, data: bytes) -> t.Optional[bool]:
    """Whether `name` in dir_fd is a regular file holding `data`; None when absent. A link, FIFO or
    device is never opened through (O_NOFOLLOW | O_NONBLOCK): it counts as changed and is replaced."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EACCES):
            return False
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size != len(data):
            return False
        with os.fdopen(os.dup(fd), "rb") as existing:
            return existing.read() == data
    finally:
        os.close(fd)


def _write_file_in(dir_fd: int, name: str, data: bytes) -> None:
    """Write `name` atomically inside the directory dir_fd: a new temp file (O_EXCL | O_NOFOLLOW: a
    name nobody planted), then rename(2) within that directory, which replaces whatever sits at
    `name` (a link included: the link goes, its target is never written)."""
    for _attempt in range(10):
        tmp_name = ".greenlight-%s" % secrets.token_hex(8)
        try:
            fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=dir_fd)
            break
        except FileExistsError:
            continue
    else:
        raise OSError(errno.EEXIST, "cannot create a temporary file for %s" % name)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, 0o644)
        finally:
            os.close(fd)
        os.rename(tmp_name, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name, dir_fd=dir_fd)
        raise


def extract_static(stream: t.IO[bytes], source_path: str, static_root: str) -> dict[str, int]:
    """Copy the files of a tar stream (Docker archive GET of `source_path`) into `static_root`.
    New files are added, changed files replaced atomically, files of older releases kept.

    Root runs this, and others may once have been able to write under the static root: no symbolic
    link at or under `static_root` is followed. Each directory is opened relative to the one above
    it with O_NOFOLLOW (a linked directory is refused, naming it); each file is written to a fresh
    temp name in that directory and renamed over its name, so a link at a file name is replaced,
    never written through. Links above `static_root` (root's own layout, e.g. /var/www) are used."""
    base = posixpath.basename(source_path.rstrip("/"))
    counts = {"added": 0, "updated": 0, "unchanged": 0, "skipped": 0}
    root = os.path.normpath(static_root)
    parent, root_name = os.path.split(root)
    os.makedirs(parent or "/", mode=0o755, exist_ok=True)
    parent_fd = os.open(parent or "/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        root_fd = _open_dir_below(parent_fd, root_name, root, create=True)
    finally:
        os.close(parent_fd)
    dirs: dict[tuple, int] = {(): root_fd}  # verified directory fds by path below the root

    def dir_fd(parts: list) -> int:
        key = tuple(parts)
        if key not in dirs:
            above = dir_fd(parts[:-1])
            dirs[key] = _open_dir_below(above, parts[-1], os.path.join(root, *parts), create=True)
        return dirs[key]

    try:
        with tarfile.open(fileobj=stream, mode="r|") as archive:
            for member in archive:
                parts = [p for p in member.name.split("/") if p not in ("", ".")]
                if parts and parts[0] == base:
                    parts = parts[1:]
                if member.name.startswith("/") or ".." in parts:
                    counts["skipped"] += 1
                    continue
                if member.isdir():
                    dir_fd(parts)
                    continue
                if not member.isfile() or not parts:
                    counts["skipped"] += 1  # links and devices are not copied
                    continue
                source = archive.extractfile(member)
                data = source.read() if source else b""
                directory = dir_fd(parts[:-1])
                same = _same_content(directory, parts[-1], data)
                if same:
                    counts["unchanged"] += 1
                    continue
                counts["added" if same is None else "updated"] += 1
                _write_file_in(directory, parts[-1], data)
    finally:
        for fd in dirs.values():
            os.close(fd)
    return counts


SQLITE_COMPANIONS = ("-journal", "-wal", "-shm")


def _database_files(db_path: str) -> os.stat_result:
    """The database and its companion files, none a link (the app can write their directory)."""
    info = _refuse_links(db_path, *(db_path + suffix for suffix in SQLITE_COMPANIONS))
    if info is None:
        raise FileNotFoundError(errno.ENOENT, "no database file", db_path)
    return info


def sqlite_snapshot(db_path: str, snapshot_path: str) -> None:
    """Online, consistent copy with the sqlite3 backup API (safe while the app writes). No link in
    the app's directory is followed, and its files are opened as the database's owner."""
    backups_dir = os.path.dirname(snapshot_path)
    _refuse_linked_dir(backups_dir)
    os.makedirs(backups_dir, mode=0o750, exist_ok=True)
    owner = _database_files(db_path)
    tmp_path = snapshot_path + ".partial"
    for leftover in (tmp_path, tmp_path + "-journal"):
        try:
            os.unlink(leftover)  # a killed run's file or a planted link: unlink never follows
        except FileNotFoundError:
            pass
    fd = os.open(tmp_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
    try:
        os.fchmod(fd, 0o640)
        target = sqlite3.connect(tmp_path)
        created, opened = os.fstat(fd), os.stat(tmp_path)
    finally:
        os.close(fd)
    try:
        if (created.st_dev, created.st_ino) != (opened.st_dev, opened.st_ino):
            raise UnsafePathError("%s was replaced while the snapshot was being taken; refusing to write it"
                                  % tmp_path)
        target.execute("PRAGMA journal_mode=MEMORY")  # no journal file beside the temp file
        with _filesystem_identity(db_path, owner):
            source = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True, timeout=30)
            try:
                source.backup(target)
            finally:
                source.close()
    except BaseException:
        target.close()
        os.unlink(tmp_path)
        raise
    target.close()
    os.rename(tmp_path, snapshot_path)


def sqlite_restore(snapshot_path: str, db_path: str) -> None:
    """Copy a snapshot back over the live database through SQLite's own locking. The snapshot is
    read into memory first; the database's files are then opened as their owner (the app), so no
    link the app planted can make root write elsewhere, and new files get the app's ownership."""
    if _refuse_links(snapshot_path) is None:
        raise FileNotFoundError(errno.ENOENT, "no snapshot file", snapshot_path)
    owner = _database_files(db_path)
    memory = sqlite3.connect(":memory:")
    try:
        source = sqlite3.connect("file:%s?mode=ro" % snapshot_path, uri=True)
        try:
            source.backup(memory)
        finally:
            source.close()
        with _filesystem_identity(db_path, owner):
            target = sqlite3.connect(db_path, timeout=30)
            try:
                memory.backup(target)
            finally:
                target.close()
    finally:
        memory.close()
    for suffix in ("",) + SQLITE_COMPANIONS:
        try:  # keep the app's ownership (when not root, the files were opened as ourselves)
            os.chown(db_path + suffix, owner.st_uid, owner.st_gid, follow_symlinks=False)
        except (FileNotFoundError, PermissionError):
            pass


# --------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------
def _label(container: dict[str, t.Any], key: str) -> t.Optional[str]:
    return (container.get("Labels") or {}).get(key)


def _name(container: dict[str, t.Any]) -> str:
    names = container.get("Names") or [container.get("Name") or container.get("Id", "")[:12]]
    return names[0].lstrip("/")


def _running(container: dict[str, t.Any]) -> bool:
    return container.get("State") == "running"


def _tail(text: str, lines: int = 50) -> str:
    return "\n".join(text.rstrip().split("\n")[-lines:])


def redact(text: str, env: t.Sequence[str]) -> str:
    """`text` with every env value (KEY=value entries, values of REDACT_MIN_LENGTH characters or
    more) replaced by [redacted KEY]. The engine cannot tell secrets from plain settings, so every
    value of the env file is treated as a secret; one pass, longest value first, so a marker is
    never redacted again and a value holding another is replaced whole."""
    names: dict[str, str] = {}
    for item in env:
        key, _sep, value = item.partition("=")
        if len(value) >= REDACT_MIN_LENGTH:
            names.setdefault(value, key)
    if not names or not text:
        return text
    pattern = re.compile("|".join(re.escape(value) for value in sorted(names, key=len, reverse=True)))
    return pattern.sub(lambda match: "[redacted %s]" % names[match.group(0)], text)


def redact_values(value: t.Any, env: t.Sequence[str]) -> t.Any:
    """`value` (a result, an audit line) with redact() applied to every text in it, at any depth."""
    if not env:
        return value
    if isinstance(value, str):
        return redact(value, env)
    if isinstance(value, dict):
        return {key: redact_values(item, env) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_values(item, env) for item in value]
    return value


# The texts of a result or an audit line that carry what an app or a failure wrote (exception
# and Docker error texts, log tails). Everything else is an identifier the engine itself made (app,
# release, image, container names, snapshot paths): never redacted, so that rollback,
# restore-database and the smoke check still match on them when an env value happens to appear in
# one (APP_NAME=shop, release v2-prod with NODE_ENV=prod...). The release an app answered with
# (X-Release) is the app's text too, redacted unless it is the release id the engine expected.
FREE_TEXT_KEYS = ("error", "pre_switch_output")


def redact_free_text(result: dict[str, t.Any], env: t.Sequence[str]) -> dict[str, t.Any]:
    """`result` with redact() applied to the texts of FREE_TEXT_KEYS (at any depth) and to an
    app-reported release that is not the expected one."""
    clean = dict(result, **{key: redact_values(result[key], env) for key in FREE_TEXT_KEYS if key in result})
    expected = result.get("release")
    if isinstance(clean.get("health_release"), str) and clean["health_release"] != expected:
        clean["health_release"] = redact(clean["health_release"], env)
    verified = clean.get("proxy_verified")
    if isinstance(verified, dict) and isinstance(verified.get("release"), str) and verified["release"] != expected:
        clean["proxy_verified"] = dict(verified, release=redact(verified["release"], env))
    return clean


class Swap:
    """One swap on one server. Use :func:`run_swap`."""

    def __init__(self, opts: SwapOptions, docker: t.Optional[DockerClient] = None,
                 log: t.Optional[t.Callable[[str], None]] = None) -> None:
        self.opts = opts
        self.docker = docker or DockerClient(opts.docker_socket)
        self.log = log or (lambda message: None)
        self.actor = current_actor(opts.actor)
        self.phases: dict[str, float] = {}
        self.phase = "plan"
        self.lock: t.Optional[DeployLock] = None
        self.result: dict[str, t.Any] = {"changed": False, "rolled_back": False, "health_attempts": 0,
                                         "actor": self.actor}
        self.env: list[str] = []
        self.env_sha256: t.Optional[str] = None
        self.new_container: t.Optional[str] = None
        self.one_off: list[str] = []
        self.snapshot: t.Optional[str] = None
        self.pre_switch_started = False
        self.switched = False
        self.ever_switched = False
        self._plan: t.Optional[dict[str, t.Any]] = None

    # -- bookkeeping ----------------------------------------------------------------------------
    def _enter(self, phase: str) -> float:
        self.phase = phase
        self.log("phase %s" % phase)
        if self.lock:
            self.lock.update(phase=phase)
        return time.monotonic()

    def _leave(self, phase: str, started: float) -> None:
        self.phases[phase] = round(self.phases.get(phase, 0.0) + time.monotonic() - started, 3)

    # -- state ----------------------------------------------------------------------------------
    def _read_env(self) -> None:
        if not self.opts.env_file:
            self.env, self.env_sha256 = [], None
            return
        path = self.opts.env_file
        # Read as root from a directory the deploy user may write: never through a link (root would
        # hand another file's lines to the container), never a FIFO (it would block, lock held).
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise SwapError("env_file %s is a symbolic link; refusing to follow it (a link planted by a user "
                                "who can write that directory could make root read the file it names). Remove it "
                                "and re-run playbooks/setup.yaml (role app_env)" % path)
            raise SwapError("cannot read env_file %s: %s" % (path, exc.strerror))
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise SwapError("env_file %s is not a regular file; refusing to read it. Remove it and re-run "
                                "playbooks/setup.yaml (role app_env)" % path)
            if info.st_size > ENV_FILE_MAX_BYTES:
                raise SwapError("env_file %s is %d bytes, more than an env file holds (at most %d); refusing to "
                                "read it. Re-run playbooks/setup.yaml (role app_env) to write it again"
                                % (path, info.st_size, ENV_FILE_MAX_BYTES))
            if info.st_nlink != 1:
                raise SwapError("env_file %s has %d hard links; refusing to read it (it may be another file linked "
                                "there). Remove it and re-run playbooks/setup.yaml (role app_env)"
                                % (path, info.st_nlink))
            directory = os.stat(os.path.dirname(os.path.abspath(path)))
            # Its owner (app_env: the deploy user), this process's user, the directory's owner, or
            # anyone when only root could have put it there (a root-owned directory nobody else writes).
            root_only_dir = directory.st_uid == 0 and not directory.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
            if info.st_uid not in (os.geteuid(), directory.st_uid) and not root_only_dir:
                raise SwapError("env_file %s is owned by uid %d, neither this process's user (uid %d) nor its "
                                "directory's owner, in a directory others may write; refusing to read it. Check "
                                "who put it there, then re-run playbooks/setup.yaml (role app_env)"
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
        self.env_sha256 = hashlib.sha256(raw).hexdigest()
        try:
            self.env = parse_env_file(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise SwapError("env_file %s: %s" % (self.opts.env_file, exc))

    def _containers(self) -> list[dict[str, t.Any]]:
        return self.docker.list_containers(labels={LABEL_APP: self.opts.app_name})

    def _hash(self, image_id: str, service: str, command: t.Any = None) -> str:
        port = self.opts.container_port if service == SERVICE_WEB else None
        return config_hash(image_id, service, command, port, self.opts.mounts, self.env_sha256,
                           self.opts.restart_policy, self.opts.labels)

    def _resolve_image(self, reference: str) -> dict[str, t.Any]:
        try:
            image = self.docker.inspect_image(reference)
        except NotFound:
            raise SwapError("image %s is not on this server; pull it first (e.g. community.docker.docker_image_pull "
                            "or docker pull)" % reference)
        digests = image.get("RepoDigests") or []
        return {"id": image["Id"], "digest": digests[0] if digests else None, "repo_digests": digests}

    def plan(self) -> dict[str, t.Any]:
        """Read the server's state and decide what the swap has to do. Touches nothing."""
        opts = self.opts
        self._read_env()
        containers = self._containers()
        webs = [c for c in containers if _label(c, LABEL_SERVICE) == SERVICE_WEB]
        upstream_port = read_upstream_port(opts.upstream_file)
        at_port = sorted((c for c in webs if _label(c, LABEL_PORT) == str(upstream_port)),
                         key=lambda c: (_running(c), c.get("Created", 0)), reverse=True)
        pointed = at_port[0] if at_port else None
        live = pointed if pointed and _running(pointed) else None
        others = [c for c in webs if _running(c) and (live is None or c["Id"] != live["Id"])]

        if opts.mode == "rollback":
            # A container still "created" never ran (killed between create and start): no target.
            candidates = sorted((c for c in webs if c.get("State") != "created"), key=lambda c: c.get("Created", 0),
                                reverse=True)
            if opts.rollback_release:
                targets = [c for c in candidates if _label(c, LABEL_RELEASE) == opts.rollback_release]
                if not targets:
                    kept = sorted({_label(c, LABEL_RELEASE) for c in candidates} - {None})
                    raise SwapError("no kept release %s of %s to roll back to; kept releases: %s"
                                    % (opts.rollback_release, opts.app_name, ", ".join(kept) or "none"))
            else:
                live_release = _label(pointed, LABEL_RELEASE) if pointed else None
                targets = [c for c in candidates if not _running(c) and _label(c, LABEL_RELEASE) != live_release]
                if not targets:
                    raise SwapError("no previous release of %s is kept on this server to roll back to"
                                    % opts.app_name)
            target = targets[0]
            release = _label(target, LABEL_RELEASE)
            image_ref = _label(target, LABEL_IMAGE) or target.get("ImageID")
            image = self._resolve_image(target["ImageID"])
        else:
            image = self._resolve_image(opts.image)
            image_ref = opts.image
            release = opts.release or derive_release(opts.image, image["id"])

        web_hash = self._hash(image["id"], SERVICE_WEB)
        web_same = bool(live and _label(live, LABEL_RELEASE) == release and live.get("ImageID") == image["id"]
                        and _label(live, LABEL_CONFIG_HASH) == web_hash)
        services_plan = self._plan_services(containers, image["id"], release)
        services_change = any(item["change"] for item in services_plan)
        if opts.mode == "rollback":
            action = "rollback"
        elif live and live.get("ImageID") == image["id"] and (web_same or _label(live, LABEL_RELEASE) == release):
            action = "config-change"
        else:
            action = "deploy"
        live_port = upstream_port if live else None
        pair = list(opts.host_ports)
        new_port = pair[1] if live_port == pair[0] else pair[0]
        return {
            "action": action,
            "release": release,
            "image": image_ref,
            "image_id": image["id"],
            "image_digest": image["digest"],
            "web_hash": web_hash,
            "web_change": not web_same,
            "services_plan": services_plan,
            "services_change": services_change,
            "changed": (not web_same) or services_change or bool(others),
            "live": live,
            "pointed": pointed,
            "others": others,
            "upstream_port": upstream_port,
            "live_port": live_port,
            "new_port": new_port,
            "previous_release": _label(pointed, LABEL_RELEASE) if pointed else None,
            "previous_digest": self._digest_of(pointed.get("ImageID")) if pointed else None,
        }

    def _digest_of(self, image_id: t.Optional[str]) -> t.Optional[str]:
        if not image_id:
            return None
        try:
            return self._resolve_image(image_id)["digest"]
        except SwapError:
            return None  # the old image may have been removed; the digest is only informative

    def _plan_services(self, containers: list, image_id: str, release: str) -> list[dict[str, t.Any]]:
        plan = []
        wanted = set()
        for spec in self.opts.services:
            wanted.add(spec.name)
            mine = [c for c in containers if _label(c, LABEL_SERVICE) == spec.name]
            desired = self._hash(image_id, spec.name, spec.command)
            current = [c for c in mine if _running(c) and _label(c, LABEL_CONFIG_HASH) == desired
                       and _label(c, LABEL_RELEASE) == release and c.get("ImageID") == image_id]
            plan.append({"name": spec.name, "spec": spec, "hash": desired, "existing": mine,
                         "change": not (len(current) == 1 and len(mine) == 1)})
        for container in containers:
            service = _label(container, LABEL_SERVICE)
            if service not in RESERVED_SERVICES and service not in wanted:
                wanted.add(service)
                mine = [c for c in containers if _label(c, LABEL_SERVICE) == service]
                plan.append({"name": service, "spec": None, "hash": None, "existing": mine, "change": True})
        return plan

    def _predict(self, plan: dict[str, t.Any]) -> list[str]:
        opts = self.opts
        steps = []
        if plan["others"] and not plan["live"]:
            steps.append("the upstream file names port %s, where no web container runs: point it at the newest "
                         "running one that answers %s (adopt it) instead of stopping it, or fail stopping nothing "
                         "if none answers; candidates: %s"
                         % (plan["upstream_port"], opts.health_path, ", ".join(_name(c) for c in plan["others"])))
        elif plan["others"]:
            steps.append("stop leftover web container(s) of an interrupted run: %s"
                         % ", ".join(_name(c) for c in plan["others"]))
        if plan["web_change"]:
            if opts.sqlite_path:
                steps.append("snapshot %s into %s" % (opts.sqlite_path, opts.backups_dir))
            for command in opts.pre_switch_commands:
                steps.append("run pre-switch command: %s" % shlex.join(as_argv(command)))
            if opts.static_source:
                steps.append("copy %s from the image into %s" % (opts.static_source, opts.static_root))
            steps.append("start %s-web-%s on 127.0.0.1:%d and wait for %s"
                         % (opts.app_name, plan["release"], plan["new_port"], opts.health_path))
            steps.append("point %s at 127.0.0.1:%d and reload the proxy" % (opts.upstream_file, plan["new_port"]))
            if plan["live"]:
                steps.append("drain (%s %ss), then stop %s (kept for rollback)" % (
                    "until the proxy holds no connection to it, at most" if opts.drain_until_idle else "wait",
                    opts.drain_seconds, _name(plan["live"])))
        for item in plan["services_plan"]:
            if item["change"]:
                steps.append("replace service %s" % item["name"] if item["spec"] else "remove service %s" % item["name"])
        return steps

    def _describe(self, plan: dict[str, t.Any], after: bool) -> dict[str, t.Any]:
        if not after:
            live = plan["pointed"]
            if not live:
                return {"release": None, "image": None, "image_id": None, "digest": None,
                        "port": plan["upstream_port"], "container": None}
            return {"release": _label(live, LABEL_RELEASE), "image": _label(live, LABEL_IMAGE),
                    "image_id": live.get("ImageID"), "digest": plan["previous_digest"],
                    "port": int(_label(live, LABEL_PORT) or 0) or None, "container": _name(live)}
        if not plan["web_change"]:
            return self._describe(plan, after=False)
        return {"release": plan["release"], "image": plan["image"], "image_id": plan["image_id"],
                "digest": plan["image_digest"], "port": plan["new_port"],
                "container": (self.result.get("container_name")
                              or "%s-web-%s-(new)" % (self.opts.app_name, plan["release"]))}

    # -- containers -----------------------------------------------------------------------------
    def _container_config(self, image_id: str, release: str, service: str, config_hash_value: t.Optional[str],
                          command: t.Any = None, port: t.Optional[int] = None,
                          restart: bool = True) -> dict[str, t.Any]:
        check_mount_sources(self.opts.mounts)  # every container, right before Docker resolves the paths
        labels = dict(self.opts.labels)
        labels.update({LABEL_APP: self.opts.app_name, LABEL_RELEASE: release, LABEL_SERVICE: service,
                       LABEL_IMAGE: self.result.get("image") or image_id})
        if config_hash_value:
            labels[LABEL_CONFIG_HASH] = config_hash_value
        host_config: dict[str, t.Any] = {
            "Binds": list(self.opts.mounts),
            "RestartPolicy": {"Name": self.opts.restart_policy if restart else "no"},
        }
        config: dict[str, t.Any] = {"Image": image_id, "Env": list(self.env), "Labels": labels,
                                    "HostConfig": host_config}
        if command:
            config["Cmd"] = as_argv(command)
        if port is not None:
            key = "%d/tcp" % self.opts.container_port
            labels[LABEL_PORT] = str(port)
            config["ExposedPorts"] = {key: {}}
            host_config["PortBindings"] = {key: [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
        return config

    def _container_name(self, service: str, release: str) -> str:
        return "%s-%s-%s-%s" % (self.opts.app_name, service, release, secrets.token_hex(3))

    def _remove_quietly(self, container_id: t.Optional[str]) -> None:
        if not container_id:
            return
        try:
            self.docker.remove_container(container_id, force=True)
        except DockerError as exc:
            self.log("could not remove %s: %s" % (container_id[:12], exc))

    def _logs(self, container_id: str, lines: int = 50) -> str:
        """The last lines a container printed, with every env value redacted (an app may print its
        secrets, and these lines reach messages, results, releases.jsonl and CI logs)."""
        return _tail(redact(self.docker.container_logs(container_id, tail=lines), self.env), lines)

    def _run_one_off(self, image_id: str, release: str, command: t.Any) -> str:
        name = self._container_name("pre-switch", release)
        config = self._container_config(image_id, release, "pre-switch", None, command=command, restart=False)
        container_id = self.docker.create_container(name, config)
        self.one_off.append(container_id)
        argv = shlex.join(as_argv(command))
        try:
            self.docker.start_container(container_id)
            try:
                status = self.docker.wait_container(container_id, timeout=self.opts.pre_switch_timeout)
            except DockerError as exc:
                raise SwapError("pre-switch command `%s` did not finish within %ss (%s); output:\n%s"
                                % (argv, self.opts.pre_switch_timeout, exc, self._logs(container_id)))
            output = self._logs(container_id)
            if status != 0:
                raise SwapError("pre-switch command `%s` exited %d; last output:\n%s" % (argv, status, output))
            return output
        finally:
            self._remove_quietly(container_id)
            self.one_off.remove(container_id)

    def _copy_static(self, image_id: str, release: str) -> dict[str, int]:
        name = self._container_name("static", release)
        config = self._container_config(image_id, release, "static", None, command=["true"], restart=False)
        container_id = self.docker.create_container(name, config)  # created, never started
        self.one_off.append(container_id)
        try:
            response, conn = self.docker.get_archive(container_id, self.opts.static_source)
            try:
                return extract_static(response, self.opts.static_source, self.opts.static_root)
            finally:
                conn.close()
        finally:
            self._remove_quietly(container_id)
            self.one_off.remove(container_id)

    def _health(self, container_id: str, port: int) -> dict[str, t.Any]:
        opts = self.opts
        url = "http://127.0.0.1:%d%s" % (port, opts.health_path)
        deadline = time.monotonic() + opts.health_timeout
        last = "no answer yet"
        while True:
            self.result["health_attempts"] += 1
            try:
                status, release = fetch_release(url, timeout=max(0.5, min(5.0, opts.health_timeout)))
                if status in opts.health_statuses:
                    return {"status": status, "release": release}
                last = "HTTP %d" % status
            except (OSError, http.client.HTTPException) as exc:
                last = "%s: %s" % (type(exc).__name__, exc)
            state = self.docker.inspect_container(container_id).get("State") or {}
            if not state.get("Running"):
                raise SwapError("the new container exited (code %s) before it became healthy; last log lines:\n%s"
                                % (state.get("ExitCode"), self._logs(container_id)))
            if (state.get("Health") or {}).get("Status") == "unhealthy":
                raise SwapError("Docker reports the new container unhealthy; last log lines:\n%s"
                                % self._logs(container_id))
            if time.monotonic() >= deadline:
                raise SwapError("health check %s failed for %ss (%d attempts, last: %s); last log lines of the new "
                                "container:\n%s" % (url, opts.health_timeout, self.result["health_attempts"], last,
                                                    self._logs(container_id)))
            time.sleep(opts.health_interval)

    def _stop(self, container_id: str) -> None:
        self.docker.stop_container(container_id, self.opts.stop_grace_seconds)

    # -- phases ---------------------------------------------------------------------------------
    def _cleanup(self, plan: dict[str, t.Any]) -> list[str]:
        """Converge after an interrupted run (kill -9) or a failed reload: remove one-off
        containers; stop web containers that run but are not the one the upstream file names.
        A running web container is stopped only after nginx was reloaded with a file naming
        another running one: when the file names nothing that runs, adopt one first; when none
        can be adopted, fail with nothing stopped (SwapError)."""
        cleaned = []
        for container in self._containers():
            if _label(container, LABEL_SERVICE) in ONE_OFF_SERVICES:
                self._remove_quietly(container["Id"])
                cleaned.append(_name(container))
        cleaned.extend(self._remove_never_started())
        others = plan["others"]
        if not others:
            return cleaned
        interrupted = self.lock.previous if self.lock else None
        maybe_serving = interrupted is None or interrupted.get("phase") in TRAFFIC_PHASES
        # The killed run's new container, killed before the switch: nginx never routed to it.
        never_served = interrupted.get("new_container") if interrupted and not maybe_serving else None
        live = plan["live"]
        if live is None:
            live = self._adopt(plan, never_served)
            if live is not None:
                others = [c for c in others if c["Id"] != live["Id"]]
                maybe_serving = True  # nginx may still route to any of the others
            elif [c for c in others if c["Id"] != never_served]:
                # None answers its health path, yet nginx may route to one (a probe times out exactly
                # under load): stopping any could be the outage. Stop nothing; a person decides.
                running = ", ".join("%s (release %s, port %s)" % (_name(c), _label(c, LABEL_RELEASE),
                                                                  _label(c, LABEL_PORT))
                                    for c in others if c["Id"] != never_served)
                raise SwapError(
                    "the upstream file %s names port %s, where no web container runs, and no running web container "
                    "answered %s on its port: %s. nginx may still route to one of them, so no web container was "
                    "stopped or removed. Check the app's health (docker logs <container>; curl "
                    "http://127.0.0.1:<port>%s) and re-run (one that answers is adopted), or point the upstream file "
                    "at the port of the release that serves (then nginx -t and reload nginx) and re-run; if none of "
                    "them serves any more, stop them as root (docker stop <container>) and re-run"
                    % (self.opts.upstream_file, plan["upstream_port"], self.opts.health_path, running,
                       self.opts.health_path))
        elif maybe_serving and plan["upstream_port"] is not None:
            # nginx may still route to a leftover (killed between rename and reload): make it read
            # the file that names the live container, and let in-flight requests finish.
            self._proxy_apply(plan["upstream_port"], "reload nginx with the upstream file (port %s) before stopping "
                              "leftover web containers" % plan["upstream_port"], plan)
        if live is not None and maybe_serving:
            for container in others:
                self._drain(_label(container, LABEL_PORT))
        for container in others:
            if interrupted and container["Id"] == interrupted.get("old_container"):
                self._stop(container["Id"])  # the previous live release: keep it for rollback
            else:
                if maybe_serving:
                    self._stop(container["Id"])
                self._remove_quietly(container["Id"])
            cleaned.append(_name(container))
        return cleaned

    def _answers_health(self, port: int, attempts: int = 3) -> bool:
        url = "http://127.0.0.1:%d%s" % (port, self.opts.health_path)
        for attempt in range(attempts):
            try:
                if fetch_release(url, timeout=2.0)[0] in self.opts.health_statuses:
                    return True
            except (OSError, http.client.HTTPException):
                pass
            if attempt + 1 < attempts:
                time.sleep(0.2)
        return False

    def _adopt(self, plan: dict[str, t.Any], never_served: t.Optional[str]) -> t.Optional[dict[str, t.Any]]:
        """The upstream file names no running web container, yet some run (a reload failed after
        the file was renamed in, or the file was edited by hand): nginx may be serving one of
        them. Point the file at the newest that answers its health path and reload."""
        candidates = sorted((c for c in plan["others"] if c["Id"] != never_served),
                            key=lambda c: c.get("Created", 0), reverse=True)
        for container in candidates:
            try:
                port = int(_label(container, LABEL_PORT) or "")
            except ValueError:
                continue
            if not self._answers_health(port):
                continue
            self._proxy_apply(port, "adopt %s (release %s, port %d): the upstream file named port %s, where no web "
                              "container runs" % (_name(container), _label(container, LABEL_RELEASE), port,
                                                  plan["upstream_port"]), plan, restore=False)
            self.result["adopted"] = {"container": _name(container), "release": _label(container, LABEL_RELEASE),
                                      "port": port, "upstream_port_before": plan["upstream_port"]}
            self.log("adopted %s: the upstream file named port %s, where no web container runs"
                     % (_name(container), plan["upstream_port"]))
            return container
        return None

    def _proxy_apply(self, port: int, what: str, plan: dict[str, t.Any], restore: bool = True) -> None:
        """switch_upstream for cleanup; a failure stops the run before anything is stopped."""
        try:
            switch_upstream(self.opts.upstream_file, port, self.opts.proxy_test_command,
                            self.opts.proxy_reload_command, restore_on_reload_failure=restore)
        except ProxyError as exc:
            if isinstance(exc, ProxyReloadError) and exc.uncertain:
                self.result["proxy_uncertain"] = True
                self.result["live_port"] = exc.file_port
            raise SwapError("could not %s: %s" % (what, exc))

    def _replace_services(self, plan: dict[str, t.Any], image_id: str, release: str) -> list[str]:
        names = []
        for item in plan["services_plan"]:
            spec = item["spec"]
            if spec is None:
                for container in item["existing"]:
                    self._stop(container["Id"])
                    self._remove_quietly(container["Id"])
                continue
            if not item["change"]:
                names.append(_name(item["existing"][0]))
                continue
            old = item["existing"]
            if spec.singleton:
                for container in old:  # never two of a singleton (e.g. a scheduler) at once
                    self._stop(container["Id"])
            name = self._container_name(spec.name, release)
            config = self._container_config(image_id, release, spec.name, item["hash"], command=spec.command)
            container_id = self.docker.create_container(name, config)
            try:
                self.docker.start_container(container_id)
                time.sleep(0.5)
                state = self.docker.inspect_container(container_id).get("State") or {}
                if not state.get("Running"):
                    raise SwapError("service %s exited right after start (code %s); last log lines:\n%s"
                                    % (spec.name, state.get("ExitCode"), self._logs(container_id)))
            except BaseException:
                self._remove_quietly(container_id)
                if spec.singleton:
                    for container in old:
                        try:
                            self.docker.start_container(container["Id"])
                        except DockerError:
                            pass
                raise
            for container in old:
                if not spec.singleton:
                    self._stop(container["Id"])
                self._remove_quietly(container["Id"])
            names.append(name)
        return names

    def _remove_never_started(self) -> list[str]:
        """Containers of this app still "created" were never started (a run killed between create
        and start): they proved nothing, so they are removed, never kept for rollback."""
        removed = []
        for container in self._containers():
            if container.get("State") == "created":
                self._remove_quietly(container["Id"])
                removed.append(_name(container))
        return removed

    def _prune(self, live_id: t.Optional[str], live_release: t.Optional[str]) -> list[str]:
        removed = self._remove_never_started()
        webs = [c for c in self._containers() if _label(c, LABEL_SERVICE) == SERVICE_WEB
                and c["Id"] != live_id and not _running(c)]
        webs.sort(key=lambda c: c.get("Created", 0), reverse=True)
        kept_releases: list[str] = []
        removed_images = []
        for container in webs:
            release = _label(container, LABEL_RELEASE)
            if release != live_release and release not in kept_releases and \
                    len(kept_releases) < self.opts.releases_to_keep:
                kept_releases.append(release)
                continue
            self._remove_quietly(container["Id"])
            removed.append(_name(container))
            removed_images.append(container.get("ImageID"))
        self.result["pruned_images"] = self._prune_images(removed_images)
        if self.opts.sqlite_path:
            removed.extend(self._prune_backups())
        return removed

    def _prune_images(self, candidates: list) -> list[str]:
        """Remove the images of the containers just pruned that no container of this app uses any
        more (kept releases, the live one, services) and that the deployed release does not use;
        those are never asked for. DELETE /images/<id> without force: Docker itself refuses (409)
        an image any other container uses (of any app, running or stopped) or one tagged in
        several repositories, which is then left alone; an image with several tags of one
        repository is untagged and removed."""
        in_use = {c.get("ImageID") for c in self._containers()}
        pruned = []
        for image_id in dict.fromkeys(candidates):  # unique, in order
            if not image_id or image_id in in_use or image_id == (self._plan or {}).get("image_id"):
                continue
            try:
                self.docker.remove_image(image_id)
            except NotFound:
                continue
            except DockerError as exc:  # 409: in use; anything else must not fail a deploy that is live
                self.log("image %s kept: %s" % (image_id[:19], exc))
                continue
            pruned.append(image_id)
        return pruned

    def _prune_backups(self) -> list[str]:
        """Old snapshots beyond backups_to_keep, and the temp files of runs killed mid-snapshot."""
        backups_dir = self.opts.backups_dir
        _refuse_linked_dir(backups_dir)
        if not os.path.isdir(backups_dir):
            return []
        removed = []
        prefix = "%s-" % self.opts.app_name
        names = [f for f in os.listdir(backups_dir) if f.startswith(prefix)]
        for partial in sorted(f for f in names if f.endswith((".sqlite3.partial", ".sqlite3.partial-journal"))):
            os.unlink(os.path.join(backups_dir, partial))  # we hold the lock: no snapshot is being taken
            removed.append(partial)
        backups = sorted(f for f in names if f.endswith(".sqlite3"))
        for stale in backups[:max(0, len(backups) - self.opts.backups_to_keep)]:
            os.unlink(os.path.join(backups_dir, stale))
            removed.append(stale)
        return removed

    # -- main -----------------------------------------------------------------------------------
    def run(self) -> dict[str, t.Any]:
        opts = self.opts
        started = self._enter("plan")
        try:
            plan = self.plan()
        except (SwapError, DockerError) as exc:
            self.result.update({"failed_phase": "plan", "error": redact(str(exc), self.env), "phases": self.phases,
                                "action": "rollback" if opts.mode == "rollback" else "deploy",
                                "release": opts.release or opts.rollback_release, "image": opts.image})
            message = "%s of %s failed in phase plan on %s (nothing was changed): %s" % (
                self.result["action"], opts.app_name, self.actor["host"], self.result["error"])
            if not opts.check_mode:
                try:
                    append_jsonl(opts.releases_log, audit_record(self.result, opts.app_name, self.actor, self.env))
                except OSError as log_error:
                    message += " (could not write %s: %s)" % (opts.releases_log, log_error)
            raise SwapError(message, self.result)
        self._leave("plan", started)
        self._plan = plan
        self._fill_result(plan)
        self.result["diff"] = {"before": self._describe(plan, False), "after": self._describe(plan, True)}
        if not plan["changed"]:
            self.result["actions"] = []
            self.result["phases"] = self.phases
            self._proxy_check()
            return self.result
        self.result["changed"] = True
        self.result["actions"] = self._predict(plan)
        if opts.check_mode:
            self.result["phases"] = self.phases
            return self.result

        try:
            self._locked_run(plan)
        except BaseException as exc:
            self._fail(exc)
            raise SwapError(self.result["msg"], self.result) from (exc if isinstance(exc, Exception) else None)
        self._proxy_check()
        self.result.update(redact_free_text(self.result, self.env))  # e.g. an X-Release the app chose
        return self.result

    def _proxy_check(self) -> None:
        """When nothing verified the proxy in this run (no web swap), ask it once whether it
        answers, so callers need no smoke check of their own: result proxy_verified. A failed
        check changes nothing and fails nothing here; proxy_verified is then absent."""
        opts = self.opts
        if opts.check_mode or not opts.proxy_verify_url or "proxy_verified" in self.result:
            return
        try:
            status, release = fetch_release(opts.proxy_verify_url, timeout=min(5.0, opts.proxy_verify_timeout))
        except (OSError, http.client.HTTPException, ValueError):
            return
        if status in opts.health_statuses:
            self.result["proxy_verified"] = {"url": opts.proxy_verify_url, "status": status, "release": release,
                                             "attempts": 1}

    def _fill_result(self, plan: dict[str, t.Any]) -> None:
        live = plan["live"]
        self.result.update({
            "action": plan["action"],
            "release": plan["release"],
            "previous_release": plan["previous_release"],
            "image": plan["image"],
            "image_id": plan["image_id"],
            "image_digest": plan["image_digest"],
            "live_port": plan["upstream_port"] if live else None,
            "container_id": live["Id"] if live and not plan["web_change"] else None,
            "container_name": _name(live) if live and not plan["web_change"] else None,
            "services": [_name(c) for item in plan["services_plan"] for c in item["existing"]
                         if not item["change"]],
        })

    def _locked_run(self, plan: dict[str, t.Any]) -> None:
        opts = self.opts
        started = self._enter("lock")
        self.lock = DeployLock(opts.lock_file, dict(self.actor, app=opts.app_name, release=plan["release"],
                                                    action=plan["action"], since=utc_now(), phase="lock"))
        self.lock.acquire(opts.lock_timeout)
        # Re-read the state under the lock: another deploy may have finished while we waited.
        plan = self.plan()
        self._plan = plan
        self._fill_result(plan)
        self.lock.update(old_container=plan["live"]["Id"] if plan["live"] else None,
                         previous_release=plan["previous_release"])
        self._leave("lock", started)
        if self.lock.previous:
            self.result["recovered_from"] = {k: self.lock.previous.get(k)
                                             for k in ("pid", "user", "release", "phase", "since")}
        if not plan["changed"]:
            self.result.update({"changed": False, "actions": [], "phases": self.phases})
            self.result["diff"] = {"before": self._describe(plan, False), "after": self._describe(plan, False)}
            self.lock.release()
            self.lock = None
            return

        # Before the snapshot reads the database under a mount and before any container exists.
        check_mount_sources(opts.mounts)
        started = self._enter("cleanup")
        cleaned = self._cleanup(plan)
        self._leave("cleanup", started)
        if cleaned or self.result.get("adopted"):
            if cleaned:
                self.result["cleaned"] = cleaned
            plan = self.plan()  # the leftovers are gone: decide again
            self._plan = plan
            self._fill_result(plan)
        self.result["action"] = plan["action"]
        live = plan["live"]

        if plan["web_change"]:
            self._swap_web(plan)
        else:
            self.result["container_id"] = live["Id"] if live else None
            self.result["container_name"] = _name(live) if live else None
            self.result["live_port"] = plan["live_port"]

        started = self._enter("services")
        self.result["services"] = self._replace_services(plan, plan["image_id"], plan["release"])
        self._leave("services", started)

        started = self._enter("prune")
        self.result["pruned"] = self._prune(self.result.get("container_id"), plan["release"])
        self._leave("prune", started)

        started = self._enter("record")
        self.result["diff"] = {"before": self._describe(plan, False), "after": self._describe(plan, True)}
        self.result["phases"] = self.phases
        self._leave("record", started)
        self.result["phases"] = self.phases
        append_jsonl(opts.releases_log, audit_record(self.result, opts.app_name, self.actor, self.env))
        self.lock.release()
        self.lock = None

    def _swap_web(self, plan: dict[str, t.Any]) -> None:
        opts = self.opts
        image_id, release = plan["image_id"], plan["release"]
        old = plan["live"]

        if opts.sqlite_path:
            started = self._enter("snapshot")
            if os.path.lexists(opts.sqlite_path):  # a dangling link is refused by the snapshot, not skipped
                stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
                snapshot_name = "%s-%s-before-%s.sqlite3" % (opts.app_name, stamp, release)
                self.snapshot = os.path.join(opts.backups_dir, snapshot_name)
                sqlite_snapshot(opts.sqlite_path, self.snapshot)
                self.result["snapshot"] = self.snapshot
            self._leave("snapshot", started)

        if opts.pre_switch_commands:
            started = self._enter("pre_switch")
            self.pre_switch_started = True
            outputs = []
            for command in opts.pre_switch_commands:
                outputs.append(_tail(self._run_one_off(image_id, release, command), 20))
            self.result["pre_switch_output"] = outputs
            self._leave("pre_switch", started)

        if opts.static_source:
            started = self._enter("static")
            self.result["static_files"] = self._copy_static(image_id, release)
            self._leave("static", started)

        started = self._enter("start")
        port = plan["new_port"]
        name = self._container_name(SERVICE_WEB, release)
        config = self._container_config(image_id, release, SERVICE_WEB, plan["web_hash"], port=port)
        self.new_container = self.docker.create_container(name, config)
        self.lock.update(new_container=self.new_container)
        self.result.update({"container_id": self.new_container, "container_name": name})
        self.docker.start_container(self.new_container)
        self._leave("start", started)

        started = self._enter("health")
        health = self._health(self.new_container, port)
        self.result["health_release"] = health["release"]
        self._leave("health", started)

        started = self._enter("switch")
        try:
            switch_upstream(opts.upstream_file, port, opts.proxy_test_command, opts.proxy_reload_command)
        except ProxyReloadError as exc:
            if exc.uncertain:  # nginx may have read the new file: _fail keeps both releases running
                self.result["proxy_uncertain"] = True
                self.result["live_port"] = exc.file_port
            raise
        self.switched = True
        self.ever_switched = True
        self.result["live_port"] = port
        if opts.proxy_verify_url:
            try:
                verified = verify(opts.proxy_verify_url, health["release"], opts.health_statuses,
                                  opts.proxy_verify_timeout)
                self.result["proxy_verified"] = dict(verified, url=opts.proxy_verify_url)
            except ProxyError as exc:
                self._switch_back(plan, exc)
        self._leave("switch", started)

        if old:
            started = self._enter("drain")
            self.result["drain"] = self._drain(_label(old, LABEL_PORT) or plan["upstream_port"])
            self._leave("drain", started)
            started = self._enter("stop_old")
            self._stop(old["Id"])
            self._leave("stop_old", started)

    def _drain(self, port: t.Any) -> dict[str, t.Any]:
        """Let the proxy finish what it sent to the old release: until it holds no connection to
        the old port (drain_until_idle), at most drain_seconds; or a fixed drain_seconds."""
        opts = self.opts
        if not opts.drain_until_idle:
            time.sleep(opts.drain_seconds)
            return {"seconds": opts.drain_seconds, "idle": None}
        try:
            port = int(port) if port is not None else None
        except (TypeError, ValueError):
            port = None
        return wait_drained(port, opts.drain_seconds)

    def _switch_back(self, plan: dict[str, t.Any], error: Exception) -> None:
        old = plan["live"]
        if not old:
            raise SwapError("%s; no previous release was live to switch back to, the new release stays in the "
                            "upstream" % error)
        state = self.docker.inspect_container(old["Id"]).get("State") or {}
        if not state.get("Running"):
            raise SwapError("%s; the previous container %s is not running, so the new release stays in the upstream"
                            % (error, _name(old)))
        try:
            # The file keeps naming the previous (known-good) release even if nginx cannot be
            # reloaded now: nginx reads it at its next start, the next run re-applies it.
            switch_upstream(self.opts.upstream_file, plan["live_port"], self.opts.proxy_test_command,
                            self.opts.proxy_reload_command, restore_on_reload_failure=False)
        except ProxyError as exc:
            if isinstance(exc, ProxyReloadError) and exc.uncertain:
                self.result["proxy_uncertain"] = True
                self.result["live_port"] = exc.file_port
            raise SwapError("%s; could not switch the proxy back to the previous release %s: %s"
                            % (error, plan["previous_release"], exc))
        self.switched = False
        self.result["rolled_back"] = True
        self.result["live_port"] = plan["live_port"]
        raise SwapError("%s; switched the proxy back to the previous release" % error)

    def _fail(self, exc: BaseException) -> None:
        """Leave the server as it was (before the switch), write the audit line, build the message."""
        opts = self.opts
        phase = self.phase
        plan = self._plan
        previous = self.result.get("previous_release")
        notes = []
        if isinstance(exc, LockTimeout):
            message = str(exc)
        else:
            message = "%s: %s" % (type(exc).__name__, exc) if not isinstance(exc, SwapError) else str(exc)
        # App-controlled text reaches here (an X-Release header, a health answer, log lines, any
        # exception's text): redact once, for the message, the result and the audit line alike.
        message = redact(message, self.env)
        if self.result.get("proxy_uncertain") and not isinstance(exc, LockTimeout):
            for container_id in list(self.one_off):
                self._remove_quietly(container_id)
            notes.append(self._uncertain_note(plan))
        elif not self.switched and not isinstance(exc, LockTimeout):
            for container_id in list(self.one_off):
                self._remove_quietly(container_id)
            if self.new_container:
                self._remove_quietly(self.new_container)
                notes.append("removed the new container")
                self.result["container_id"] = plan["live"]["Id"] if plan and plan["live"] else None
                self.result["container_name"] = _name(plan["live"]) if plan and plan["live"] else None
                self.result["live_port"] = plan["live_port"] if plan else None
            if self.snapshot and self.pre_switch_started and opts.restore_on_failure and not self.ever_switched:
                try:
                    sqlite_restore(self.snapshot, opts.sqlite_path)
                    notes.append("restored the database from %s" % self.snapshot)
                    self.result["restored"] = True
                except (OSError, sqlite3.Error) as restore_error:
                    notes.append("COULD NOT restore the database from %s: %s" % (self.snapshot, restore_error))
                    self.result["restored"] = False
            if self.result.get("rolled_back"):
                notes.append("the previous release %s is serving again" % previous)
            elif previous and plan and plan["live"]:
                notes.append("the previous release %s is still serving" % previous)
            elif plan and not plan["live"] and phase != "cleanup":
                notes.append("no release was live")
        elif self.switched:
            notes.append("release %s is live on port %s" % (self.result.get("release"), self.result.get("live_port")))
        self.result.update({"failed_phase": phase, "error": message, "changed": phase not in ("plan", "lock"),
                            "phases": self.phases})
        what = self.result.get("action") or "deploy"
        self.result["msg"] = "%s of %s release %s failed in phase %s on %s: %s%s. %s" % (
            what, opts.app_name, self.result.get("release"), phase, self.actor["host"], message.rstrip("."),
            "" if not notes else "; " + "; ".join(notes),
            "Fix the cause and re-run; every run is recorded in %s." % opts.releases_log)
        self.result.update(redact_free_text(self.result, self.env))  # msg is built from the redacted message
        try:
            append_jsonl(opts.releases_log, audit_record(self.result, opts.app_name, self.actor, self.env))
        except OSError as log_error:
            self.result["msg"] += " (could not write %s: %s)" % (opts.releases_log, log_error)
        if self.lock:
            self.lock.release()
            self.lock = None

    def _uncertain_note(self, plan: t.Optional[dict[str, t.Any]]) -> str:
        """nginx could not be reloaded: say what runs, what the upstream file names, what to do."""
        running = []
        if plan:
            for container in ([plan["live"]] if plan["live"] else []) + list(plan["others"]):
                running.append("%s (release %s, port %s)" % (_name(container), _label(container, LABEL_RELEASE),
                                                             _label(container, LABEL_PORT)))
            if self.new_container:
                running.append("%s (release %s, port %s)" % (self.result.get("container_name"),
                                                             self.result.get("release"), plan["new_port"]))
        file_port = read_upstream_port(self.opts.upstream_file)
        note = ("nginx could not be reloaded, so it may be routing to either release: nothing was stopped or "
                "removed, %s kept running; the upstream file names port %s, which nginx reads at its next reload "
                "or start" % (", ".join(running) or "no web container", file_port))
        if self.snapshot and self.pre_switch_started:
            note += "; the database was not restored (the new release may have served)"
        return note + ("; repair nginx (nginx -t; systemctl status nginx) and re-run: the next run reloads nginx "
                       "with that file before it stops anything")


def run_swap(options: t.Union[dict, SwapOptions], docker: t.Optional[DockerClient] = None,
             log: t.Optional[t.Callable[[str], None]] = None) -> dict[str, t.Any]:
    """Run one swap. Returns the result dict; raises SwapError (with `.result`) on failure."""
    try:
        opts = options_from_dict(options)
    except TypeError as exc:
        raise OptionsError("invalid options: %s" % exc)
    return Swap(opts, docker=docker, log=log).run()
