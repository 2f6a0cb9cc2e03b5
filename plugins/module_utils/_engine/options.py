# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The engine's options: SwapOptions, their validation and the value grammars (regexes).

See docs/container_swap.md for every option."""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import typing as t

from .docker_api import DEFAULT_SOCKET
from .errors import OptionsError
from .labels import RESERVED_SERVICES
from .schema import MODES, RESTART_POLICIES


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


# --------------------------------------------------------------------------------------------
# The options as a typed value. schema.py is the one option table (types, defaults, choices,
# descriptions): tests/unit/plugins/module_utils/test_option_schema.py fails when these fields,
# their defaults or validate_options drift from it.
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
    docker_config: t.Optional[str] = None  # mode prepare: the Docker client directory root pulls with
    check_mode: bool = False


OPTION_NAMES = tuple(f.name for f in dataclasses.fields(SwapOptions))


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
                raise OptionsError("services: unknown key(s) %s in the service named %r (keys: name, command, "
                                   "singleton)" % (", ".join(extra), item.get("name")))
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
    if opts.mode not in MODES:
        errors.append("mode must be one of %s, got %r" % (", ".join(MODES), opts.mode))
    if opts.mode in ("deploy", "prepare"):
        if not opts.image:
            errors.append("image is required when mode=%s" % opts.mode)
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
    elif opts.mode in ("restore", "recreate"):
        if opts.image:
            errors.append("image is not used with mode=%s (the live release's image is used)" % opts.mode)
        if opts.rollback_release is not None:
            errors.append("rollback_release is only used with mode=rollback")
        if opts.mode == "recreate" and opts.release:
            errors.append("release is not used with mode=recreate (the live release is re-created)")
        if opts.mode == "restore" and not opts.sqlite_path:
            errors.append("sqlite_path is required when mode=restore (no database snapshot to restore otherwise)")
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
    # Commands may hold secrets (a token in an argument): messages name the item and its type only.
    for number, command in enumerate(opts.pre_switch_commands, 1):
        if not _valid_command(command):
            errors.append("pre_switch_commands: item %d (a %s) is not a command (argv list of strings, or a "
                          "non-empty string)" % (number, type(command).__name__))
    for key in ("proxy_test_command", "proxy_reload_command"):
        value = getattr(opts, key)
        if value is not None and value != "" and not _valid_command(value):
            errors.append("%s: a %s is not a command (argv list of strings, or a non-empty string)"
                          % (key, type(value).__name__))
    if opts.proxy_verify_url is not None:
        verify_match = VERIFY_URL_RE.fullmatch(opts.proxy_verify_url) if isinstance(opts.proxy_verify_url, str) else None
        if not (verify_match and URL_PATH_RE.fullmatch(verify_match.group("path"))
                and 1 <= int(verify_match.group("port") or 80) <= 65535):
            errors.append("proxy_verify_url must be http://127.0.0.1:<port>/<path> with a URL path (no spaces, '#' "
                          "or control characters), got %r" % (opts.proxy_verify_url,))
    if opts.static_source is not None and not (isinstance(opts.static_source, str) and opts.static_source.startswith("/")):
        errors.append("static_source must be an absolute path inside the image")
    for key in ("app_dir", "env_file", "static_root", "sqlite_path", "backups_dir", "upstream_file", "lock_file",
                "releases_log", "docker_config"):
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
