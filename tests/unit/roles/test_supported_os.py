"""The operating-system preflight (issue 16): a tested OS runs silently, an OS that is supported but
not tested runs with a note saying so, any other OS stops the run with the supported list and the
way out (greenlight_allow_untested_os), and with that variable set it runs with a warning. The
preflight of docker_engine (app_host's and proxy's have the same condition) honours the same variable. docs/setup.md's platform
table says what the role defaults say.

One ansible-playbook run against local "hosts" (connection local, one per case) whose facts are
set to the OS of the case.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent

CASES = {
    # host: (distribution, major, version, extra host vars)
    "debian12": ("Debian", "12", "12.8", {}),
    "debian13": ("Debian", "13", "13.1", {}),
    "ubuntu2404": ("Ubuntu", "24", "24.04", {}),
    "debian11": ("Debian", "11", "11.11", {}),
    "debian11_allowed": ("Debian", "11", "11.11", {"greenlight_allow_untested_os": True}),
    "debian13_not_listed": ("Debian", "13", "13.1", {"greenlight_supported_os": ["Debian 12"]}),
}

PLAY = """
- name: Supported OS cases
  hosts: cases
  gather_facts: false
  tasks:
    - name: Case | Facts of the case's OS
      ansible.builtin.set_fact:
        ansible_facts:
          distribution: "{{ case_os[0] }}"
          distribution_major_version: "{{ case_os[1] }}"
          distribution_version: "{{ case_os[2] }}"

    - name: Case | The common preflight
      ansible.builtin.import_role:
        name: greenlight.deploy.common

    # (app_host's and proxy's preflights read getent facts this play cannot fake beside the OS.)
    - name: Case | The preflight of a role that checks the OS itself
      ansible.builtin.include_role:
        name: "greenlight.deploy.{{ item }}"
        tasks_from: preflight
      loop: [docker_engine]

    - name: Case | Passed
      ansible.builtin.debug:
        msg: passed
"""


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> dict[str, t.Any]:
    base = tmp_path_factory.mktemp("supported-os")
    (base / "host_vars").mkdir()
    lines = ["[cases]"]
    for host, (distribution, major, version, extra) in CASES.items():
        lines.append("%s ansible_connection=local ansible_python_interpreter=%s" % (host, sys.executable))
        host_vars = {"case_os": [distribution, major, version], "greenlight_app_name": "todo", **extra}
        (base / "host_vars" / ("%s.yml" % host)).write_text(yaml.safe_dump(host_vars))
    (base / "hosts.ini").write_text("\n".join(lines) + "\n")
    (base / "play.yml").write_text(PLAY)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / ".collections"), ANSIBLE_STDOUT_CALLBACK="json",
               ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_NOCOLOR="1",
               ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_FORKS="10")
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(base / "hosts.ini"), str(base / "play.yml")],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    start = proc.stdout.find("{\n")
    assert start >= 0, (proc.stdout + proc.stderr)[-3000:]
    result, _end = json.JSONDecoder().raw_decode(proc.stdout[start:])
    tasks: dict[str, dict[str, dict[str, t.Any]]] = {}
    for play in result["plays"]:
        for task in play["tasks"]:
            for host, item in task["hosts"].items():
                # Without the "greenlight.deploy.<role> : " the callback puts before a role's task.
                tasks.setdefault(host, {})[task["task"]["name"].split(" : ", 1)[-1]] = item
    return tasks


def ran(task: t.Optional[dict[str, t.Any]]) -> bool:
    return task is not None and not task.get("skipped")


def failed_message(tasks: dict[str, dict[str, t.Any]]) -> t.Optional[str]:
    for item in tasks.values():
        if item.get("failed"):
            return " ".join(str(item.get("msg", "")).split())
    return None


WARNING = "Preflight | WARNING, the operating system is not supported (greenlight_allow_untested_os)"
NOTE = "Preflight | Note, the operating system is expected to work but not tested"
SUPPORTED = ("greenlight.deploy supports Debian 12, Debian 13, Ubuntu 22.04, Ubuntu 24.04 (tested by its test "
             "suite: Debian 12, Debian 13; expected to work: Ubuntu 22.04, Ubuntu 24.04)")


@pytest.mark.parametrize("host", ["debian12", "debian13"])
def test_a_tested_os_passes_without_a_word(outcome, host) -> None:
    tasks = outcome[host]
    assert failed_message(tasks) is None
    assert ran(tasks.get("Case | Passed"))
    assert not ran(tasks.get(WARNING)) and not ran(tasks.get(NOTE))


def test_a_supported_but_untested_os_passes_with_a_note(outcome) -> None:
    tasks = outcome["ubuntu2404"]
    assert failed_message(tasks) is None and ran(tasks.get("Case | Passed"))
    assert not ran(tasks.get(WARNING)) and ran(tasks.get(NOTE))
    note = " ".join(tasks[NOTE]["msg"].split())
    assert note.startswith("ubuntu2404 runs Ubuntu 24.04: supported, expected to work but not tested")
    assert SUPPORTED in note


def test_an_unsupported_os_is_refused_naming_the_list_and_the_way_out(outcome) -> None:
    tasks = outcome["debian11"]
    message = failed_message(tasks)
    assert message is not None and not ran(tasks.get("Case | Passed"))
    assert message.startswith(SUPPORTED + "; debian11 runs Debian 11.11.")
    assert "set greenlight_allow_untested_os: true" in message and "docs/setup.md" in message


def test_an_unsupported_os_runs_with_a_warning_when_allowed(outcome) -> None:
    tasks = outcome["debian11_allowed"]
    assert failed_message(tasks) is None
    assert ran(tasks.get("Case | Passed")), "docker_engine must honour the variable too"
    assert ran(tasks.get(WARNING)) and not ran(tasks.get(NOTE))
    warning = " ".join(tasks[WARNING]["msg"].split())
    assert warning.startswith("WARNING: debian11_allowed runs Debian 11.11, which greenlight.deploy does not support")
    assert "greenlight_allow_untested_os is true" in warning


def test_the_supported_list_decides_even_for_a_tested_os(outcome) -> None:
    """greenlight_tested_os only says which supported entries are tested; it accepts nothing."""
    message = failed_message(outcome["debian13_not_listed"])
    assert message is not None
    assert message.startswith("greenlight.deploy supports Debian 12 (tested by its test suite: Debian 12; "
                              "expected to work: none); debian13_not_listed runs Debian 13.1.")


def test_docs_platform_table_matches_the_role_defaults() -> None:
    defaults = yaml.safe_load((REPO / "roles" / "common" / "defaults" / "main.yml").read_text())
    supported, tested = defaults["greenlight_supported_os"], defaults["greenlight_tested_os"]
    assert defaults["greenlight_allow_untested_os"] is False
    text = (REPO / "docs" / "setup.md").read_text()
    section = text.split("## Supported operating systems", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 5 and re.match(r"^(Debian|Ubuntu) \d", cells[0]):
            rows[cells[0].split(" (")[0]] = cells[4]
    assert list(rows) == supported
    for os_name, status in rows.items():
        assert status.startswith("tested" if os_name in tested else "expected"), (os_name, status)
    assert "greenlight_allow_untested_os" in section
