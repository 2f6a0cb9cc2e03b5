# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The one table of the swap engine's options.

Standard library only and no imports from the rest of the engine: it is copied onto servers
with the engine package and imported by the Ansible module and the action plugin on the
controller. The module's argument_spec is built from it (:func:`argument_spec`); the engine's
options dataclass and ``validate_options``, the module's DOCUMENTATION, the deploy settings
(``setting``: the role variable whose value the deploy settings pass as this option) with their
argument_specs and defaults, and the options table of docs/container_swap.md are checked against
it by tests/unit/plugins/module_utils/test_option_schema.py.
"""

from __future__ import annotations

import copy
import dataclasses
import typing as t

# Ansible option types used by the engine, and the Python types a value of each may have.
TYPES = ("str", "path", "int", "float", "bool", "list", "dict", "raw")


@dataclasses.dataclass(frozen=True)
class Option:
    """One option: what Ansible validates (type, elements, default, required, choices, no_log),
    a one-line description, and the deploy setting (role variable) that feeds it, if any."""

    name: str
    type: str
    description: str
    default: t.Any = None
    required: bool = False
    elements: t.Optional[str] = None
    choices: t.Optional[t.Tuple[str, ...]] = None
    no_log: bool = False
    setting: t.Optional[str] = None
    suboptions: t.Tuple["Option", ...] = ()

    def spec(self) -> dict[str, t.Any]:
        """This option as an AnsibleModule argument_spec entry (defaults copied, never shared)."""
        entry: dict[str, t.Any] = {"type": self.type}
        if self.required:
            entry["required"] = True
        if self.default is not None:
            entry["default"] = copy.deepcopy(self.default)
        if self.elements:
            entry["elements"] = self.elements
        if self.choices:
            entry["choices"] = list(self.choices)
        if self.no_log:
            entry["no_log"] = True
        if self.suboptions:
            entry["options"] = {sub.name: sub.spec() for sub in self.suboptions}
        return entry


RESTART_POLICIES = ("no", "always", "unless-stopped", "on-failure")
MODES = ("deploy", "rollback", "prepare", "restore", "recreate")

SERVICE_OPTIONS: t.Tuple[Option, ...] = (
    Option("name", "str", "Service name; not web.", required=True),
    Option("command", "raw", "Command of the service, an argv list or a string.", required=True),
    Option("singleton", "bool", "Stop the old container before the new one starts.", default=False),
)

OPTIONS: t.Tuple[Option, ...] = (
    Option("app_name", "str", "Name of the app: container names, labels, default paths.", required=True,
           setting="greenlight_app_name"),
    Option("image", "str", "Image reference to put live; required with mode=deploy and prepare, refused with "
           "rollback, restore and recreate."),
    Option("mode", "str", "deploy puts image live; rollback puts a kept earlier release live again; prepare "
           "checks the lock, pulls image and says whether a deploy would change anything; restore puts back the "
           "database snapshot taken when release (default the live one) was replaced; recreate re-creates the live "
           "release's containers with the current env file.",
           default="deploy", choices=MODES),
    Option("rollback_release", "str", "Release id to roll back to; default the newest kept release other than the live one."),
    Option("release", "str", "Release id for labels and the audit log; default from the image tag or digest. "
           "mode=restore: the live release whose database snapshot to put back."),
    Option("app_dir", "path", "Directory of the app; base of the derived lock, log and backup paths.",
           setting="greenlight_app_dir"),
    Option("env_file", "path", "Env file of every container, parsed like docker run --env-file.",
           setting="greenlight_env_file"),
    Option("mounts", "list", "Bind mounts or volumes host:container[:ro|rw] of every app container.",
           default=[], elements="str", setting="deploy_script_mounts"),
    Option("container_port", "int", "Port the app listens on inside the container.", default=8000,
           setting="greenlight_container_port"),
    Option("host_ports", "list", "Blue/green pair of host ports on 127.0.0.1.", default=[8001, 8002],
           elements="int", setting="greenlight_web_ports"),
    Option("health_path", "str", "URL path polled on the new container before the switch.", default="/health",
           setting="deploy_script_health_path"),
    Option("health_timeout", "float", "Seconds the new container has to answer health_path.", default=60.0,
           setting="deploy_script_health_timeout"),
    Option("health_interval", "float", "Seconds between health requests.", default=0.25,
           setting="deploy_script_health_interval"),
    Option("health_statuses", "list", "HTTP statuses that count as healthy (also through the proxy).", default=[200],
           elements="int", setting="deploy_script_health_statuses"),
    Option("pre_switch_commands", "list", "Commands run in one-off containers of the new image before the switch.",
           default=[], elements="raw", setting="deploy_script_pre_switch_commands"),
    Option("pre_switch_timeout", "float", "Seconds each pre-switch command may run.", default=600.0,
           setting="deploy_script_pre_switch_timeout"),
    Option("static_source", "str", "Directory inside the image copied into static_root before the switch.",
           setting="deploy_script_static_source"),
    Option("static_root", "path", "Host directory nginx serves static files from.",
           setting="deploy_script_static_root"),
    Option("sqlite_path", "path", "SQLite database snapshotted before the pre-switch commands.",
           setting="deploy_script_sqlite_path"),
    Option("restore_on_failure", "bool", "Restore the snapshot when the deploy fails before the switch.", default=True,
           setting="deploy_script_restore_on_failure"),
    Option("backups_dir", "path", "Directory of the database snapshots.", setting="greenlight_backup_dir"),
    Option("backups_to_keep", "int", "Number of database snapshots kept.", default=5,
           setting="deploy_script_backups_to_keep"),
    Option("upstream_file", "path", "nginx upstream include file; the port it names identifies the live container.",
           setting="greenlight_upstream_file"),
    Option("proxy_test_command", "raw", "Command checking the proxy configuration after the upstream file changed.",
           default="nginx -t", setting="deploy_script_proxy_test_command"),
    Option("proxy_reload_command", "raw", "Command making the proxy read the new upstream gracefully.",
           default="nginx -s reload", setting="deploy_script_proxy_reload_command"),
    Option("proxy_verify_url", "str", "http://127.0.0.1[:port]/path fetched through the proxy after the switch.",
           setting="deploy_script_proxy_url"),
    Option("proxy_verify_timeout", "float", "Seconds the proxy has to answer from the new release.", default=10.0,
           setting="deploy_script_proxy_verify_timeout"),
    Option("drain_seconds", "float", "Longest wait after the switch before the old container stops.", default=30.0,
           setting="deploy_script_drain_seconds"),
    Option("drain_until_idle", "bool", "End the drain once nothing can still reach the old container.", default=True,
           setting="deploy_script_drain_until_idle"),
    Option("stop_grace_seconds", "int", "Seconds between SIGTERM and SIGKILL when a container stops.", default=10,
           setting="deploy_script_stop_grace_seconds"),
    Option("releases_to_keep", "int", "Earlier releases kept stopped for rollback.", default=3,
           setting="deploy_script_releases_to_keep"),
    Option("lock_file", "path", "File locked with flock(2) during the swap; holds the holder's details.",
           setting="greenlight_lock_file"),
    Option("lock_timeout", "float", "Seconds to wait for another deploy of the app to finish.", default=60.0,
           setting="deploy_script_lock_timeout"),
    Option("releases_log", "path", "Audit log, one JSON line per changing or failed run.",
           setting="greenlight_releases_log"),
    Option("services", "list", "Other services run from the same image, replaced after web is live.", default=[],
           elements="dict", setting="deploy_script_services", suboptions=SERVICE_OPTIONS),
    Option("labels", "dict", "Extra labels on every container; greenlight.* keys are reserved.", default={},
           setting="deploy_script_labels"),
    Option("restart_policy", "str", "Docker restart policy of the web and service containers.",
           default="unless-stopped", choices=RESTART_POLICIES, setting="deploy_script_restart_policy"),
    Option("docker_socket", "path", "Docker Engine API unix socket.", default="/var/run/docker.sock",
           setting="deploy_script_docker_socket"),
    Option("actor", "str", "Free text recorded as actor.by in the audit line, e.g. a CI job URL."),
    Option("docker_config", "path", "mode=prepare: the Docker client directory (registry login) the pull uses."),
)

# Options of the engine's Python API that no front end takes from users (the module sets
# check_mode from --check).
ENGINE_ONLY: t.Tuple[Option, ...] = (
    Option("check_mode", "bool", "Decide and report without changing anything.", default=False),
)

# (option, value, options required then): as AnsibleModule's required_if.
REQUIRED_IF: t.Tuple[t.Tuple[str, str, t.Tuple[str, ...]], ...] = (
    ("mode", "deploy", ("image",)),
    ("mode", "prepare", ("image",)),
    ("mode", "restore", ("sqlite_path",)),
)

BY_NAME: t.Dict[str, Option] = {option.name: option for option in OPTIONS}


def argument_spec() -> dict[str, dict[str, t.Any]]:
    """AnsibleModule argument_spec of container_swap (a fresh dict on every call)."""
    return {option.name: option.spec() for option in OPTIONS}


def required_if() -> list[tuple[str, str, tuple[str, ...]]]:
    """AnsibleModule required_if of container_swap."""
    return [(option, value, tuple(required)) for option, value, required in REQUIRED_IF]
