"""Preflight checks of roles and playbooks against values the engine or Docker would read
differently (issue 10): env values with any line separator or a template marker (app_env), names
and tags with a trailing newline (full matches), tags that cannot be release ids and health paths
that are not URL paths (deploy.yml's preflight).

Each run is one ansible-playbook against several local "hosts" (connection local, one per case),
so a case fails on its own host and the others still run. Nothing here needs Docker except the
control host of the deploy preflight, whose `docker pull` from 127.0.0.1:1 is refused at once.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest

from ansible_collections.greenlight.deploy.plugins.module_utils._engine.envfile import parse_env_file

REPO = Path(__file__).resolve().parents[3]
COLLECTIONS = REPO / ".collections"
BIN = Path(sys.executable).parent

LINE_BREAKS = {"LF": "\n", "CR": "\r", "VT": "\v", "FF": "\f", "FS": "\x1c", "GS": "\x1d", "RS": "\x1e",
               "NEL": "\x85", "LS": "\u2028", "PS": "\u2029", "NUL": "\x00"}
TEMPLATE_MARKERS = {"braces": "{{ 1 }}", "statement": "{% if 1 %}x{% endif %}", "comment": "{# cut"}


def canary() -> str:
    return "CANARY" + secrets.token_hex(10)


def yaml_string(value: str, unsafe: bool = False) -> str:
    # A JSON string is a YAML double-quoted string (every control character escaped).
    return ("!unsafe " if unsafe else "") + json.dumps(value)


def run_play(tmp_path: Path, play: str, hosts: dict[str, str], *args: str) -> dict[str, t.Any]:
    """Run `play` on local hosts whose host_vars are the given YAML texts; return the JSON
    callback's result with the raw output under "_output"."""
    (tmp_path / "host_vars").mkdir()
    lines = ["[cases]"]
    for name, host_vars in hosts.items():
        lines.append("%s ansible_connection=local ansible_python_interpreter=%s" % (name, sys.executable))
        (tmp_path / "host_vars" / ("%s.yml" % name)).write_text("---\n" + host_vars)
    (tmp_path / "hosts.ini").write_text("\n".join(lines) + "\n")
    (tmp_path / "play.yml").write_text(play)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS), ANSIBLE_STDOUT_CALLBACK="json",
               ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_NOCOLOR="1",
               ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_FORKS="10")
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(tmp_path / "hosts.ini"), str(tmp_path / "play.yml"),
                           *args], env=env, capture_output=True, text=True, timeout=300, check=False)
    output = proc.stdout + proc.stderr
    start = proc.stdout.find("{\n")
    assert start >= 0, output[-3000:]
    result, _end = json.JSONDecoder().raw_decode(proc.stdout[start:])
    result["_output"] = output
    return result


def failure(result: dict[str, t.Any], host: str) -> tuple[t.Optional[str], str]:
    """(name of the last task that failed on host, its message), or (None, "") when nothing failed
    (a failure a rescue handled is followed by the test play's own report)."""
    found: tuple[t.Optional[str], str] = (None, "")
    for play in result["plays"]:
        for task in play["tasks"]:
            outcome = task["hosts"].get(host)
            if outcome and outcome.get("failed") and not outcome.get("ignore_errors"):
                found = task["task"]["name"], " ".join(str(outcome.get("msg", "")).split())
    return found


# -- app_env --------------------------------------------------------------------------------------
APP_ENV_PLAY = """
- name: Test | app_env alone
  hosts: cases
  gather_facts: false
  tasks:
    - name: Test | Apply app_env
      ansible.builtin.include_role:
        name: greenlight.deploy.app_env
"""


def app_env_vars(tmp_path: Path, host: str, secrets_yaml: str) -> str:
    directory = tmp_path / "opt" / host
    directory.mkdir(parents=True)
    return ("greenlight_app_name: todo\napp_env_file: %s\napp_env_owner: %s\n"
            "app_env_vars: {DJANGO_ALLOWED_HOST: 127.0.0.1, DJANGO_DB_PATH: /data/db.sqlite3}\n"
            "app_env_secrets:\n%s" % (directory / "todo.env", getpass.getuser(), secrets_yaml))


@pytest.fixture(scope="module")
def app_env_run(tmp_path_factory) -> dict[str, t.Any]:
    tmp_path = tmp_path_factory.mktemp("app-env")
    cases: dict[str, tuple[str, str]] = {}
    for name, separator in LINE_BREAKS.items():
        value = canary()
        cases["break_%s" % name] = (value, "  EMAIL_HOST_PASSWORD: %s\n" % yaml_string(value + separator + "INJECTED=1"))
    for name, marker in TEMPLATE_MARKERS.items():
        value = canary()
        cases["template_%s" % name] = (value, "  EMAIL_HOST_PASSWORD: %s\n" % yaml_string(value + marker, unsafe=True))
    value = canary()
    cases["name_newline"] = (value, "  %s: %s\n" % (yaml_string("EMAIL_HOST_PASSWORD\n"), yaml_string(value)))
    value = canary() + "\"q'$HOME `x` ; {} %"
    cases["control"] = (value, "  EMAIL_HOST_PASSWORD: %s\n" % yaml_string(value, unsafe=True))
    hosts = {host: app_env_vars(tmp_path, host, secrets_yaml) for host, (_value, secrets_yaml) in cases.items()}
    result = run_play(tmp_path, APP_ENV_PLAY, hosts, "--diff", "-v")
    result["_cases"] = {host: value for host, (value, _yaml) in cases.items()}
    result["_tmp"] = tmp_path
    return result


def test_app_env_control_writes_the_value_verbatim(app_env_run):
    assert failure(app_env_run, "control") == (None, ""), app_env_run["_output"][-3000:]
    written = (app_env_run["_tmp"] / "opt" / "control" / "todo.env").read_text()
    env = dict(item.split("=", 1) for item in parse_env_file(written, {}))
    assert env["EMAIL_HOST_PASSWORD"] == app_env_run["_cases"]["control"]


@pytest.mark.parametrize("host", ["break_%s" % name for name in LINE_BREAKS])
def test_app_env_refuses_every_line_separator_naming_the_key(app_env_run, host):
    task, message = failure(app_env_run, host)
    assert task and "Preflight | Check values" in task, (task, message)
    assert "EMAIL_HOST_PASSWORD" in message and "line break" in message, message
    assert not (app_env_run["_tmp"] / "opt" / host / "todo.env").exists()


@pytest.mark.parametrize("host", ["template_%s" % name for name in TEMPLATE_MARKERS])
def test_app_env_refuses_template_markers_naming_the_key(app_env_run, host):
    task, message = failure(app_env_run, host)
    assert task and "Preflight | Check values" in task, (task, message)
    assert "EMAIL_HOST_PASSWORD" in message and "!unsafe" in message, message
    assert not (app_env_run["_tmp"] / "opt" / host / "todo.env").exists()


def test_app_env_refuses_a_name_with_a_trailing_newline(app_env_run):
    task, message = failure(app_env_run, "name_newline")
    assert task and "Preflight | Check variable names" in task, (task, message)
    assert not (app_env_run["_tmp"] / "opt" / "name_newline" / "todo.env").exists()


def test_app_env_never_prints_a_refused_value(app_env_run):
    output = app_env_run["_output"]
    assert "Preflight | Check values" in output  # control: the run got there
    for host, value in app_env_run["_cases"].items():
        if host != "control":
            assert value not in output, host


# -- common: the application name ----------------------------------------------------------------
def test_app_name_with_a_trailing_newline_is_refused(tmp_path):
    hosts = {"newline": "greenlight_app_name: %s\n" % yaml_string("todo\n"), "control": "greenlight_app_name: todo\n"}
    play = ("- name: Test | common\n  hosts: cases\n  gather_facts: false\n  roles:\n"
            "    - role: greenlight.deploy.common\n")
    result = run_play(tmp_path, play, hosts)
    task, message = failure(result, "newline")
    assert task and "Check greenlight_app_name" in task and "greenlight_app_name" in message, (task, message)
    assert failure(result, "control") == (None, ""), result["_output"][-3000:]


# -- app_host: modes that would give the deploy group write access back -----------------------------
APP_HOST_PREFLIGHT_PLAY = """
- name: Test | app_host preflight
  hosts: cases
  gather_facts: false
  vars:
    greenlight_app_name: gltest-modes
    ansible_facts: {distribution: Debian, distribution_major_version: "12", distribution_version: "12.5"}
  tasks:
    - name: Test | Preflight
      ansible.builtin.include_role:
        name: greenlight.deploy.app_host
        tasks_from: preflight.yml
"""


def test_app_host_refuses_modes_that_let_the_deploy_group_write(tmp_path):
    hosts = {"group_dir": 'app_host_dir_mode: "0770"\n', "other_static": 'app_host_static_mode: "0757"\n',
             "group_state": 'app_host_state_file_mode: "0660"\n', "backups": 'app_host_backup_mode: "2775"\n',
             "symbolic": 'app_host_data_mode: "u=rwx,g=rx"\n', "control": 'app_host_dir_mode: "0710"\n'}
    result = run_play(tmp_path, APP_HOST_PREFLIGHT_PLAY, hosts)
    for host, variable in (("group_dir", "app_host_dir_mode"), ("other_static", "app_host_static_mode"),
                           ("group_state", "app_host_state_file_mode"), ("backups", "app_host_backup_mode"),
                           ("symbolic", "app_host_data_mode")):
        task, message = failure(result, host)
        assert task and "no write access" in task and variable in message, (host, task, message)
        assert message.count("app_host_") == 1, message  # only the offending variable is named
    assert failure(result, "control") == (None, ""), result["_output"][-3000:]


# -- deploy.yml's preflight (greenlight.deploy.release, tasks/deploy_prepare.yml) ---------------------
DEPLOY_PREPARE_PLAY = """
- name: Test | deploy.yml preflight and pull
  hosts: cases
  gather_facts: false
  tasks:
    - name: Test | Preflight and pull
      ansible.builtin.import_role:
        name: greenlight.deploy.release
        tasks_from: deploy_prepare.yml
    - name: Test | Report the outcome
      ansible.builtin.fail:
        msg: "{{ _release_failure.phase }}: {{ _release_failure.message }}"
      when: _release_failure is defined
"""


def deploy_vars(tmp_path: Path, host: str, **extra: str) -> str:
    values = {"greenlight_app_name": "gltest-pre", "greenlight_image_repository": "127.0.0.1:1/gltest/todo",
              "greenlight_registry": "127.0.0.1:1", "greenlight_deploy_user": getpass.getuser(),
              "ansible_user": getpass.getuser(), "deploy_script_become": False,
              "greenlight_lock_file": str(tmp_path / ("%s.lock" % host)),
              "greenlight_upstream_file": str(tmp_path / ("%s-upstream.conf" % host))}
    values.update(extra)
    return "".join("%s: %s\n" % (key, json.dumps(value)) for key, value in values.items())


@pytest.mark.parametrize("tag", ["_v1", "v" * 65, "v1\n"])
def test_tag_that_cannot_be_a_release_id_fails_in_preflight(tmp_path, tag):
    result = run_play(tmp_path, DEPLOY_PREPARE_PLAY, {"case": deploy_vars(tmp_path, "case")},
                      "-e", json.dumps({"app_image_tag": tag}))
    task, message = failure(result, "case")
    # Role tasks are named "<role> : <task>" in the JSON callback.
    assert task.split(" : ")[-1] == "Preflight | Check app_image_tag and app_release", (task, message)
    assert "release id" in message, message


def test_long_tag_passes_preflight_with_an_explicit_release(tmp_path):
    result = run_play(tmp_path, DEPLOY_PREPARE_PLAY, {"case": deploy_vars(tmp_path, "case")},
                      "-e", json.dumps({"app_image_tag": "_" + "a" * 100, "app_release": "v9"}))
    task, message = failure(result, "case")
    assert task == "Test | Report the outcome" and message.startswith("pull:"), (task, message)


def test_health_path_or_verify_url_that_is_not_a_url_path_fails_in_preflight(tmp_path):
    hosts = {
        "control": deploy_vars(tmp_path, "control"),
        "health_space": deploy_vars(tmp_path, "health_space", deploy_script_health_path="/he alth"),
        "health_hash": deploy_vars(tmp_path, "health_hash", deploy_script_health_path="/health#x"),
        "health_newline": deploy_vars(tmp_path, "health_newline", deploy_script_health_path="/health\n"),
        "verify_space": deploy_vars(tmp_path, "verify_space", deploy_script_proxy_url="http://127.0.0.1/he alth"),
    }
    result = run_play(tmp_path, DEPLOY_PREPARE_PLAY, hosts, "-e", json.dumps({"app_image_tag": "v1"}))
    task, message = failure(result, "control")
    assert task == "Test | Report the outcome" and message.startswith("pull:"), (task, message)  # control
    for host in ("health_space", "health_hash", "health_newline", "verify_space"):
        task, message = failure(result, host)
        assert task == "Test | Report the outcome" and message.startswith("preflight:"), (host, task, message)
        assert "deploy_script_health_path a URL path" in message, (host, message)


# -- the summary file for CI ----------------------------------------------------------------------
def test_summary_file_is_0600(tmp_path):
    summary = tmp_path / "summary.json"
    play = """
- name: Test | summary
  hosts: cases
  gather_facts: false
  tasks:
    - name: Test | Record an outcome
      ansible.builtin.set_fact:
        release_outcome: {state: deployed, live: v1, release: v1, message: "deployed v1"}
    - name: Test | Summary
      ansible.builtin.import_role:
        name: greenlight.deploy.release
        tasks_from: summary.yml
"""
    result = run_play(tmp_path, play, {"case": "greenlight_deploy_summary_file: %s\n" % summary})
    assert failure(result, "case") == (None, ""), result["_output"][-3000:]
    assert json.loads(summary.read_text())["case"]["release"] == "v1"  # control
    assert summary.stat().st_mode & 0o777 == 0o600
