"""The container_swap action plugin checks the options on the controller with the engine's own
rules, before the module is sent to any server."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
import typing as t
from pathlib import Path
from unittest import mock

import pytest

from ansible_collections.greenlight.deploy.plugins.action.container_swap import MODULE, ActionModule, controller_check

REPO = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(REPO / "tests"))
from gltest import VENV_BIN, ansible_env, free_port  # noqa: E402  pylint: disable=wrong-import-position

VALID = {"app_name": "todo", "image": "registry.greenlight.test:5000/greenlight/todo:v2",
         "labels": {"team": "s3cr3t-label-value"}}
BAD_HEALTH_PATH = "/health check#now"


def engine() -> t.Any:
    """The engine module holding options_from_dict."""
    return importlib.import_module("ansible_collections.greenlight.deploy.plugins.module_utils._engine.options")


def engine_message(options: dict[str, t.Any]) -> str:
    with pytest.raises(engine().OptionsError) as caught:
        engine().options_from_dict(options)
    return str(caught.value)


def run_action(args: dict[str, t.Any], check_mode: bool = False) -> tuple[dict[str, t.Any], mock.MagicMock]:
    task = mock.MagicMock()
    task.args = args
    task.async_val = 0
    task.check_mode = check_mode
    task.diff = False
    action = ActionModule(task, mock.MagicMock(), mock.MagicMock(), mock.MagicMock(), None, None)
    module_result = {"changed": True, "swap_action": "deploy", "release": "v2"}
    with mock.patch.object(ActionModule, "_execute_module", return_value=module_result) as execute:
        return action.run(task_vars={}), execute


def test_valid_options_pass_and_go_to_the_module_unchanged() -> None:
    assert controller_check(VALID) is None
    assert controller_check(dict(VALID, health_path="/health?probe=1", container_port="8000")) is None
    result, execute = run_action(dict(VALID))
    execute.assert_called_once()
    assert execute.call_args.kwargs["module_name"] == MODULE == "greenlight.deploy.container_swap"
    assert execute.call_args.kwargs["module_args"] == VALID
    assert result["changed"] is True and result["release"] == "v2" and not result.get("failed")


def test_a_rule_of_the_engine_fails_the_task_with_the_engine_message_and_no_module_runs() -> None:
    args = dict(VALID, health_path=BAD_HEALTH_PATH)
    result, execute = run_action(args)
    execute.assert_not_called()
    assert result["failed"] is True and result["changed"] is False and result["swap_action"] is None
    assert result["msg"] == engine_message(args)
    assert "health_path must be a URL path" in result["msg"]
    assert "s3cr3t-label-value" not in json.dumps(result)


def test_every_problem_is_reported_at_once_in_check_mode_too() -> None:
    args = {"app_name": "Todo", "mode": "rollback", "image": "greenlight/todo:v2", "host_ports": [8001, 8001]}
    result, execute = run_action(args, check_mode=True)
    execute.assert_not_called()
    for part in ("app_name 'Todo' must match", "image is not used with mode=rollback", "host_ports must be"):
        assert part in result["msg"], result["msg"]


def test_types_and_required_options_are_checked_like_ansible_module_does() -> None:
    assert "app_name" in controller_check({"image": "greenlight/todo:v2"})["msg"]
    assert "image" in controller_check({"app_name": "todo"})["msg"]  # required_if mode=deploy
    assert "container_port" in controller_check(dict(VALID, container_port="eighty"))["msg"]
    assert "no_such_option" in controller_check(dict(VALID, no_such_option=1))["msg"]
    assert "restart_policy" in controller_check(dict(VALID, restart_policy="sometimes"))["msg"]


PLAYBOOK = textwrap.dedent("""\
    - name: Swap on a server nobody can reach
      hosts: web
      gather_facts: false
      tasks:
        - name: Deploy
          greenlight.deploy.container_swap:
            app_name: todo
            image: registry.greenlight.test:5000/greenlight/todo:v2
            health_path: "{{ health_path }}"
    """)


def run_playbook(tmp_path: Path, health_path: str) -> dict[str, t.Any]:
    """Run the playbook against a host whose ssh port refuses connections; the JSON callback's result."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(json.dumps({"all": {"hosts": {"web": {
        "ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": free_port(),
        "ansible_user": "nobody", "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o ConnectTimeout=5"}}}}))
    playbook = tmp_path / "swap.yml"
    playbook.write_text(PLAYBOOK)
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(playbook),
                           "-e", json.dumps({"health_path": health_path})],
                          env=ansible_env(ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json", ANSIBLE_RETRY_FILES_ENABLED="0",
                                          ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp")),
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode != 0, proc.stdout[-3000:]
    report = json.loads(proc.stdout)
    return report["plays"][0]["tasks"][0]["hosts"]["web"]


def test_through_ansible_playbook_a_bad_option_fails_before_any_connection(tmp_path: Path) -> None:
    # Control: valid options are sent, and the host is unreachable.
    sent = run_playbook(tmp_path, "/health")
    assert sent.get("unreachable") is True, sent
    refused = run_playbook(tmp_path, BAD_HEALTH_PATH)
    assert not refused.get("unreachable") and refused.get("failed") is True, refused
    assert refused["msg"] == engine_message({"app_name": "todo", "health_path": BAD_HEALTH_PATH,
                                             "image": "registry.greenlight.test:5000/greenlight/todo:v2"})


def test_an_invalid_command_is_refused_without_echoing_it() -> None:
    # A command may carry a secret (a token in an argument): the refusal names the item only.
    secret = "Bearer s3cr3t-t0ken-value"
    for args in ({"pre_switch_commands": [{"sh": secret}]},
                 {"proxy_reload_command": {"token": secret}},
                 {"services": [{"name": "worker", "command": ["celery"], "env": secret}]}):
        refused = controller_check(dict({"app_name": "todo", "image": "registry.test/todo:v2"}, **args))
        assert refused is not None and refused["failed"] is True, args
        assert secret not in str(refused), refused["msg"]
