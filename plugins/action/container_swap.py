# -*- coding: utf-8 -*-

# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Action plugin of greenlight.deploy.container_swap (documentation: plugins/modules/container_swap.py).

Checks the options on the controller with the engine's own rules (the option schema, then the
engine's ``validate_options``) before the module is sent to the server: a bad health_path or
image reference fails the task without contacting any server, with the message the engine would
give, so a playbook's preflight and the engine cannot disagree. Valid options go to the module
unchanged; it validates them again where it runs.

The fast call: when the play has the deploy settings of the role ``deploy_script``
(``deploy_script_install_dir``), the server may already hold this collection's engine - the archive
``<deploy_script_install_dir>/greenlight.zip`` that ``deploy.sh`` runs. Then one ``python3``
process on the server runs it (engine ``remote.py``: the options validated here as JSON on stdin,
become as for the module) instead of the module's AnsiballZ payload, which carries Ansible's module
wrapper and the whole engine on every call. The server runs the archive only if its bytes have
this collection's engine's digest; when it is missing or another version, the module is sent as
usual. Not when pipelining is off (the options would then need a file on the server).
Check mode, diff and the result are the module's.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import typing as t

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.common.parameters import remove_values
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.greenlight.deploy.plugins.lookup.engine_archive import engine_archive_bytes

from ansible_collections.greenlight.deploy.plugins.module_utils._engine.schema import argument_spec, required_if

from ansible_collections.greenlight.deploy.plugins.module_utils._engine.options import OptionsError, options_from_dict
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.remote import BOOT

MODULE = "greenlight.deploy.container_swap"
# The interpreter deploy.sh runs the installed engine with (roles/deploy_script/templates/deploy.sh.j2).
SERVER_PYTHON = "/usr/bin/python3"
ARCHIVE_NAME = "greenlight.zip"

display = Display()


def validate(args: t.Mapping[str, t.Any]) -> t.Any:
    """ArgumentSpecValidator's result for `args`: what AnsibleModule would make of them."""
    return ArgumentSpecValidator(argument_spec(), required_if=required_if()).validate(dict(args))


def shape(reply: t.Mapping[str, t.Any], diff: bool) -> dict[str, t.Any]:
    """The module's result from the engine's reply (plugins/modules/container_swap.py main())."""
    result = dict(reply.get("result") or {})
    if reply.get("failed") is not None:
        result.pop("msg", None)
    if not diff:
        result.pop("diff", None)
    result["swap_action"] = result.pop("action", None)
    if reply.get("failed") is not None:
        result.update(failed=True, msg=reply["failed"])
    return result


def controller_check(args: t.Mapping[str, t.Any], check_mode: bool = False) -> t.Optional[dict[str, t.Any]]:
    """None when the engine would accept `args`; else the failed result the module would return.

    Types are checked and converted as AnsibleModule does (same argument_spec), then the engine
    builds and validates its options. Nothing is read from or written to any host.
    """
    validated = validate(args)
    if validated.error_messages:
        # ArgumentSpecValidator hides the values of no_log options in its messages.
        return {"failed": True, "changed": False, "swap_action": None,
                "msg": "invalid options: " + "; ".join(validated.error_messages)}
    options = dict(validated.validated_parameters)
    options["check_mode"] = check_mode
    try:
        options_from_dict(options)
    except OptionsError as exc:
        partial = dict(exc.result)
        partial.pop("msg", None)
        partial["swap_action"] = partial.pop("action", None)
        return dict(partial, failed=True, changed=False, msg=str(exc))
    return None


class ActionModule(ActionBase):
    """Validate on the controller, then run the module on the target."""

    TRANSFERS_FILES = False

    def run(self, tmp: t.Any = None, task_vars: t.Optional[dict[str, t.Any]] = None) -> dict[str, t.Any]:
        result = super().run(tmp, task_vars)
        del tmp  # tmp no longer has any effect
        refused = controller_check(self._task.args, check_mode=bool(self._task.check_mode))
        if refused is not None:
            result.update(refused)
            return result
        fast = self._fast_call(task_vars or {})
        if fast is not None:
            result.update(fast)
            return result
        result.update(self._execute_module(module_name=MODULE, module_args=self._task.args, task_vars=task_vars))
        return result

    def _installed_archive(self, task_vars: t.Mapping[str, t.Any]) -> t.Optional[str]:
        """<deploy_script_install_dir>/greenlight.zip when the play has the deploy settings."""
        if "deploy_script_install_dir" not in task_vars:
            return None
        directory = self._templar.template(task_vars["deploy_script_install_dir"])
        if not isinstance(directory, str) or not directory.startswith("/"):
            return None
        return directory.rstrip("/") + "/" + ARCHIVE_NAME

    def _fast_call(self, task_vars: t.Mapping[str, t.Any]) -> t.Optional[dict[str, t.Any]]:
        """The module's result from the installed engine, or None when the module must be sent."""
        if not self._is_pipelining_enabled("new"):
            return None
        archive = self._installed_archive(task_vars)
        if archive is None:
            return None
        validated = validate(self._task.args)
        params = dict(validated.validated_parameters)
        options = dict(params, check_mode=bool(self._task.check_mode))
        digest = hashlib.sha256(engine_archive_bytes()).hexdigest()
        command = shlex.join([SERVER_PYTHON, "-I", "-c", BOOT, archive, digest])
        environment = self._compute_environment_string()
        if environment:
            command = "%s %s" % (environment, command)
        res = self._low_level_execute_command(command, sudoable=True,
                                              in_data=json.dumps({"options": options}, sort_keys=True).encode("utf-8"))
        if res.get("rc") in (126, 127) and not (res.get("stdout") or "").strip():
            # No /usr/bin/python3 to run it with (so no deploy.sh either): the module, with the
            # interpreter Ansible finds.
            display.vvv("container_swap: %s could not run on the server (exit %s): sending the module"
                        % (SERVER_PYTHON, res.get("rc")), host=self._play_context.remote_addr)
            return None
        try:
            reply = json.loads(res.get("stdout") or "")
            if not isinstance(reply, dict):
                raise ValueError("not an object")
        except ValueError:
            return {"failed": True, "changed": False, "swap_action": None, "rc": res.get("rc"),
                    "module_stdout": res.get("stdout", ""), "module_stderr": res.get("stderr", ""),
                    "msg": "the swap engine %s on the server gave no result (exit %s); see module_stderr"
                           % (archive, res.get("rc"))}
        if reply.get("greenlight_engine") == "unsafe":
            # deploy.sh runs that archive as root too: worth more than a verbose line.
            display.warning("container_swap: %s on the server, or a directory above it, can be changed by users "
                            "other than root; not running it (sending the module instead). Re-run "
                            "greenlight.deploy.setup and keep deploy_script_install_dir in root-owned directories."
                            % archive)
            return None
        if "greenlight_engine" in reply:
            display.vvv("container_swap: %s on the server is %s, not this collection's engine (%s): sending the module"
                        % (archive, reply["greenlight_engine"], digest[:16]), host=self._play_context.remote_addr)
            return None
        result = shape(reply, diff=bool(self._task.diff))
        result["invocation"] = {"module_args": params}
        # As AnsibleModule.exit_json: no value of a no_log option in the result.
        return t.cast(dict, remove_values(result, validated._no_log_values))
