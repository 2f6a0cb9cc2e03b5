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
"""

from __future__ import annotations

import typing as t

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

from ansible_collections.greenlight.deploy.plugins.module_utils._engine.schema import argument_spec, required_if

from ansible_collections.greenlight.deploy.plugins.module_utils._engine.options import OptionsError, options_from_dict

MODULE = "greenlight.deploy.container_swap"


def controller_check(args: t.Mapping[str, t.Any], check_mode: bool = False) -> t.Optional[dict[str, t.Any]]:
    """None when the engine would accept `args`; else the failed result the module would return.

    Types are checked and converted as AnsibleModule does (same argument_spec), then the engine
    builds and validates its options. Nothing is read from or written to any host.
    """
    validator = ArgumentSpecValidator(argument_spec(), required_if=required_if())
    validated = validator.validate(dict(args))
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
        result.update(self._execute_module(module_name=MODULE, module_args=self._task.args, task_vars=task_vars))
        return result
