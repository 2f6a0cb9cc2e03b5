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


# -- the fast call: the engine deploy_script installed on the server, one python3 process ----------
INSTALL_DIR = "/usr/local/lib/greenlight/todo"


def fast_action(args: dict[str, t.Any], reply: t.Any, check_mode: bool = False, diff: bool = False,
                async_val: int = 0, pipelining: bool = True,
                task_vars: t.Optional[dict[str, t.Any]] = None) -> tuple[dict[str, t.Any], mock.MagicMock, mock.MagicMock]:
    """Run the action with the deploy settings in task_vars; the server answers `reply` on stdout."""
    task = mock.MagicMock()
    task.args = args
    task.async_val = async_val
    task.check_mode = check_mode
    task.diff = diff
    templar = mock.MagicMock()
    templar.template.side_effect = lambda value: value
    action = ActionModule(task, mock.MagicMock(), mock.MagicMock(), mock.MagicMock(), templar, None)
    stdout = reply if isinstance(reply, str) else json.dumps(reply)
    module_result = {"changed": True, "swap_action": "deploy", "release": "from-the-module"}
    with mock.patch.object(ActionModule, "_execute_module", return_value=module_result) as execute, \
            mock.patch.object(ActionModule, "_is_pipelining_enabled", return_value=pipelining), \
            mock.patch.object(ActionModule, "_compute_environment_string", return_value=""), \
            mock.patch.object(ActionModule, "_low_level_execute_command",
                              return_value={"rc": 0, "stdout": stdout, "stderr": ""}) as low:
        result = action.run(task_vars={"deploy_script_install_dir": INSTALL_DIR} if task_vars is None else task_vars)
    return result, execute, low


def engine_digest() -> str:
    import hashlib
    from ansible_collections.greenlight.deploy.plugins.lookup.engine_archive import engine_archive_bytes
    return hashlib.sha256(engine_archive_bytes()).hexdigest()


def test_the_installed_engine_runs_in_one_command_with_the_options_on_stdin() -> None:
    engine_result = {"changed": True, "action": "deploy", "release": "v2", "diff": {"before": "v1", "after": "v2"},
                     "outcome": {"state": "deployed"}}
    result, execute, low = fast_action(dict(VALID, container_port="8000"), {"result": engine_result}, check_mode=True)
    execute.assert_not_called()
    low.assert_called_once()
    command = low.call_args.args[0]
    assert command.startswith("/usr/bin/python3 -I -c ")
    assert command.endswith(" %s/greenlight.zip %s" % (INSTALL_DIR, engine_digest()))
    assert low.call_args.kwargs["sudoable"] is True  # become as for the module
    assert isinstance(low.call_args.kwargs["in_data"], bytes)  # what connection plugins write to stdin
    sent = json.loads(low.call_args.kwargs["in_data"])["options"]
    assert sent["check_mode"] is True and sent["container_port"] == 8000  # converted like AnsibleModule does
    assert sent["mode"] == "deploy" and sent["labels"] == VALID["labels"]  # with the argument_spec's defaults
    assert "s3cr3t-label-value" not in command  # options never on the command line
    # Shaped like the module's result: swap_action, no diff without --diff.
    assert result["swap_action"] == "deploy" and "action" not in result and "diff" not in result
    assert result["changed"] is True and result["release"] == "v2" and not result.get("failed")
    assert result["invocation"]["module_args"]["image"] == VALID["image"]


def test_diff_is_kept_with_diff_and_an_engine_failure_fails_the_task_with_its_message() -> None:
    result, _execute, _low = fast_action(dict(VALID), {"result": {"changed": True, "action": "deploy",
                                                                  "diff": {"before": "v1"}}}, diff=True)
    assert result["diff"] == {"before": "v1"}
    failure = {"failed": "health: no answer on /health", "result": {"changed": False, "action": "deploy",
                                                                     "msg": "stale", "failed_phase": "health"}}
    result, _execute, _low = fast_action(dict(VALID), failure)
    assert result["failed"] is True and result["msg"] == "health: no answer on /health"
    assert result["failed_phase"] == "health" and result["swap_action"] == "deploy" and result["changed"] is False


def test_a_missing_or_different_installed_engine_sends_the_module() -> None:
    for found in ("missing", "0" * 64):
        result, execute, low = fast_action(dict(VALID), {"greenlight_engine": found})
        low.assert_called_once()
        execute.assert_called_once()
        assert result["release"] == "from-the-module"


def test_an_installed_engine_others_could_change_is_not_run_and_the_user_is_warned() -> None:
    from ansible_collections.greenlight.deploy.plugins.action import container_swap as plugin
    with mock.patch.object(plugin.display, "warning") as warning:
        result, execute, low = fast_action(dict(VALID), {"greenlight_engine": "unsafe"})
    execute.assert_called_once()
    assert result["release"] == "from-the-module"
    [call] = warning.call_args_list
    assert "other than root" in call.args[0] and "greenlight.zip" in call.args[0]
    with mock.patch.object(plugin.display, "warning") as warning:
        fast_action(dict(VALID), {"greenlight_engine": "missing"})
    warning.assert_not_called()  # an engine not installed yet is normal after an upgrade


def test_without_deploy_settings_or_pipelining_the_module_is_sent() -> None:
    for kwargs in ({"task_vars": {}}, {"pipelining": False},
                   {"task_vars": {"deploy_script_install_dir": "relative/dir"}}):
        result, execute, low = fast_action(dict(VALID), {"result": {"changed": False}}, **kwargs)
        low.assert_not_called()
        execute.assert_called_once()
        assert result["release"] == "from-the-module", kwargs


def test_no_python3_on_the_server_sends_the_module() -> None:
    task_vars = {"deploy_script_install_dir": INSTALL_DIR}
    with mock.patch.object(ActionModule, "_low_level_execute_command",
                           return_value={"rc": 127, "stdout": "", "stderr": "sh: 1: /usr/bin/python3: not found"}):
        task = mock.MagicMock(args=dict(VALID), async_val=0, check_mode=False, diff=False)
        templar = mock.MagicMock()
        templar.template.side_effect = lambda value: value
        action = ActionModule(task, mock.MagicMock(), mock.MagicMock(), mock.MagicMock(), templar, None)
        with mock.patch.object(ActionModule, "_execute_module", return_value={"release": "from-the-module"}) as execute, \
                mock.patch.object(ActionModule, "_is_pipelining_enabled", return_value=True), \
                mock.patch.object(ActionModule, "_compute_environment_string", return_value=""):
            result = action.run(task_vars=task_vars)
    execute.assert_called_once()
    assert result["release"] == "from-the-module"


def test_no_result_from_the_server_fails_clearly() -> None:
    result, execute, _low = fast_action(dict(VALID), "Traceback (most recent call last): ...")
    execute.assert_not_called()
    assert result["failed"] is True and "gave no result" in result["msg"] and "greenlight.zip" in result["msg"]


def run_boot(tmp_path: Path, digest: str, stdin: str) -> subprocess.CompletedProcess:
    from ansible_collections.greenlight.deploy.plugins.lookup.engine_archive import engine_archive_bytes
    from ansible_collections.greenlight.deploy.plugins.module_utils._engine.remote import BOOT
    archive = tmp_path / "greenlight.zip"
    archive.write_bytes(engine_archive_bytes())
    return subprocess.run([sys.executable, "-I", "-c", BOOT, str(archive), digest], input=stdin,
                          capture_output=True, text=True, timeout=60, check=False)


def boot(archive: Path, stdin: str = "not json") -> subprocess.CompletedProcess:
    from ansible_collections.greenlight.deploy.plugins.module_utils._engine.remote import BOOT
    return subprocess.run([sys.executable, "-I", "-c", BOOT, str(archive), engine_digest()], input=stdin,
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_server_program_runs_only_the_engine_with_the_expected_digest(tmp_path: Path) -> None:
    # Another digest: it says what it found and reads nothing (stdin is not even JSON here).
    other = run_boot(tmp_path, "0" * 64, "not json")
    assert other.returncode == 0 and json.loads(other.stdout) == {"greenlight_engine": engine_digest()}
    missing = subprocess.run([sys.executable, "-I", "-c", importlib.import_module(
        "ansible_collections.greenlight.deploy.plugins.module_utils._engine.remote").BOOT,
        str(tmp_path / "nothing.zip"), engine_digest()], capture_output=True, text=True, timeout=60, check=False)
    assert json.loads(missing.stdout) == {"greenlight_engine": "missing"}
    # The digest matches, but others could change the archive or its directory: not run.
    archive = tmp_path / "greenlight.zip"
    for target in (archive, tmp_path):
        mode = target.stat().st_mode
        target.chmod(mode | 0o002)
        unsafe = subprocess.run([sys.executable, "-I", "-c", importlib.import_module(
            "ansible_collections.greenlight.deploy.plugins.module_utils._engine.remote").BOOT,
            str(archive), engine_digest()], input="not json", capture_output=True, text=True, timeout=60, check=False)
        target.chmod(mode)
        assert json.loads(unsafe.stdout) == {"greenlight_engine": "unsafe"}, (target, unsafe.stderr)
    # ... or a directory further up (without the sticky bit /tmp has, others could rename it away).
    up = tmp_path / "up"
    (up / "lib").mkdir(parents=True)
    deep = up / "lib" / "greenlight.zip"
    deep.write_bytes(archive.read_bytes())
    up.chmod(0o777)
    assert json.loads(boot(deep).stdout) == {"greenlight_engine": "unsafe"}
    up.chmod(0o1777)  # sticky: others cannot rename or remove what root owns in it
    assert "greenlight_engine" not in json.loads(boot(deep, '{"options": {"app_name": "Todo", "image": "x:v2"}}').stdout)
    # A symlink is resolved first: what is checked is what runs.
    unsafe_dir = tmp_path / "open"
    unsafe_dir.mkdir(mode=0o777)
    unsafe_dir.chmod(0o777)
    (unsafe_dir / "greenlight.zip").write_bytes(archive.read_bytes())
    link = tmp_path / "link.zip"
    link.symlink_to(unsafe_dir / "greenlight.zip")
    assert json.loads(boot(link).stdout) == {"greenlight_engine": "unsafe"}
    # The digest matches: the engine in the archive runs the options (here refused by its own rules,
    # so nothing on this machine is read or changed).
    ran = run_boot(tmp_path, engine_digest(), json.dumps({"options": {"app_name": "Todo", "image": "x:v2"}}))
    assert ran.returncode == 0, ran.stderr
    reply = json.loads(ran.stdout)
    assert "app_name 'Todo' must match" in reply["failed"]
    assert reply["result"]["outcome"]["phase"] == "options"
