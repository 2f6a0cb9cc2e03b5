"""No secret value reaches ansible-playbook's output, even at -vvvv --diff.

Each test runs the scenario's converge against the instance with fresh canary secrets passed in
a vars file, captures stdout and stderr, and greps for the canaries. A control test first proves
the grep finds a canary when something does print it.
"""
from __future__ import annotations

import json
import os
import pathlib
import secrets
import subprocess

import pytest

ENV_FILE = "/opt/todo/todo.env"
SCENARIO = pathlib.Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])
INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]


@pytest.fixture(scope="module", autouse=True)
def restore_converged_state(tmp_path_factory):
    """Put the scenario's own canaries back afterwards, so verify can run again."""
    yield
    proc = converge(tmp_path_factory.mktemp("restore"))
    assert proc.returncode == 0, output(proc)[-3000:]


def new_canary() -> str:
    return f"CANARY-{secrets.token_hex(12)}"


def run(tmp_path: pathlib.Path, argv: list[str], extra_vars: dict[str, str]) -> subprocess.CompletedProcess[str]:
    vars_file = tmp_path / f"vars-{secrets.token_hex(4)}.json"
    vars_file.write_text(json.dumps(extra_vars))
    return subprocess.run(
        [*argv, "-i", INVENTORY, "-e", f"@{vars_file}"],
        capture_output=True, text=True, check=False, env=dict(os.environ, ANSIBLE_NOCOLOR="1"),
    )


def converge(tmp_path: pathlib.Path, **extra_vars: str) -> subprocess.CompletedProcess[str]:
    return run(tmp_path, ["ansible-playbook", str(SCENARIO / "converge.yml"), "-vvvv", "--diff"], extra_vars)


def output(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout + proc.stderr


def test_control_grep_finds_a_printed_canary(tmp_path) -> None:
    """If this fails, the other tests prove nothing: the canary did not reach ansible or the grep is broken."""
    canary = new_canary()
    proc = run(tmp_path, ["ansible", "all", "-vvvv", "-m", "ansible.builtin.debug",
                          "-a", "var=app_env_secrets"], {"vault_django_secret_key": canary})
    assert proc.returncode == 0, output(proc)[-3000:]
    assert canary in output(proc)


def test_first_write_then_change_then_no_change_never_print_secrets(host, tmp_path) -> None:
    host.run(f"rm -f {ENV_FILE}")
    first, second = new_canary(), new_canary()

    created = converge(tmp_path, vault_django_secret_key=first)
    assert created.returncode == 0, output(created)[-3000:]
    assert first not in output(created)
    assert "app_env_changed=True" in output(created)
    assert f"DJANGO_SECRET_KEY={first}" in host.file(ENV_FILE).content_string

    changed = converge(tmp_path, vault_django_secret_key=second)
    assert changed.returncode == 0, output(changed)[-3000:]
    assert first not in output(changed) and second not in output(changed)
    assert "app_env_changed=True" in output(changed)
    assert f"DJANGO_SECRET_KEY={second}" in host.file(ENV_FILE).content_string
    assert host.file(ENV_FILE).mode == 0o600

    same = converge(tmp_path, vault_django_secret_key=second)
    assert same.returncode == 0, output(same)[-3000:]
    assert second not in output(same)
    assert "app_env_changed=False" in output(same)
    assert "changed=0" in output(same)


@pytest.mark.parametrize("separator", ["\n", "\r"])
def test_multi_line_secret_is_rejected_by_name_without_its_value(host, tmp_path, separator) -> None:
    before = host.file(ENV_FILE).content_string
    canary = new_canary()
    proc = converge(tmp_path, vault_email_host_password=f"{canary}{separator}second line")
    assert proc.returncode != 0
    assert "EMAIL_HOST_PASSWORD" in output(proc)
    assert "line break" in output(proc)
    assert canary not in output(proc)
    assert host.file(ENV_FILE).content_string == before, "a rejected value must not change the file"


def test_undefined_vault_variable_is_named(tmp_path) -> None:
    """A secret pointing at a vault variable that is not there fails before any change."""
    vars_file = tmp_path / "undefined.yml"
    vars_file.write_text('app_env_secrets: {DJANGO_SECRET_KEY: "{{ vault_not_in_the_vault }}"}\n')
    proc = subprocess.run(
        ["ansible-playbook", str(SCENARIO / "converge.yml"), "-i", INVENTORY, "-e", f"@{vars_file}"],
        capture_output=True, text=True, check=False, env=dict(os.environ, ANSIBLE_NOCOLOR="1"),
    )
    assert proc.returncode != 0
    # The role's argument validation stops it before any task, naming role and variable.
    assert "TASK [greenlight.deploy.app_env : Validating arguments" in output(proc)
    assert "'vault_not_in_the_vault' is undefined" in output(proc)
    assert "failed=1" in output(proc)


@pytest.mark.parametrize(
    ("extra_vars", "message"),
    [
        ({"app_env_vars": {}, "app_env_secrets": {}}, "app_env_vars and app_env_secrets are both empty"),
        ({"app_env_vars": {"DJANGO_DEBUG_FALSE": True}}, "the values of DJANGO_DEBUG_FALSE are"),
        ({"app_env_vars": {"BAD-NAME": "x"}}, "invalid variable names BAD-NAME"),
        ({"app_env_vars": {"DJANGO_SECRET_KEY": "x"}}, "DJANGO_SECRET_KEY set in both"),
    ],
    ids=["nothing-to-write", "boolean-value", "bad-name", "name-in-both"],
)
def test_bad_input_fails_in_preflight_naming_role_and_key(host, tmp_path, extra_vars, message) -> None:
    before = host.file(ENV_FILE).content_string
    proc = run(tmp_path, ["ansible-playbook", str(SCENARIO / "converge.yml")], extra_vars)
    assert proc.returncode != 0
    assert "TASK [greenlight.deploy.app_env : Preflight |" in output(proc)
    assert "greenlight.deploy.app_env: " in output(proc)
    assert message in " ".join(output(proc).split()), output(proc)[-2000:]
    assert host.file(ENV_FILE).content_string == before


def test_check_mode_predicts_the_change_without_printing_or_writing(host, tmp_path) -> None:
    before = host.file(ENV_FILE).content_string
    canary = new_canary()
    proc = run(tmp_path, ["ansible-playbook", str(SCENARIO / "converge.yml"), "--check", "--diff", "-vvvv"],
               {"vault_django_secret_key": canary})
    assert proc.returncode == 0, output(proc)[-3000:]
    assert "app_env_changed=True" in output(proc)
    assert canary not in output(proc)
    assert host.file(ENV_FILE).content_string == before


def test_missing_owner_fails_but_check_mode_predicts(tmp_path) -> None:
    """Before app_host has run: a real run stops in preflight, --check predicts the write."""
    extra = {"app_env_owner": "nosuchuser", "app_env_file": "/opt/nosuchapp/nosuchapp.env"}
    real = run(tmp_path, ["ansible-playbook", str(SCENARIO / "converge.yml")], extra)
    assert real.returncode != 0
    assert "user nosuchuser (app_env_owner, default greenlight_deploy_user) does not exist" in " ".join(output(real).split())
    check = run(tmp_path, ["ansible-playbook", str(SCENARIO / "converge.yml"), "--check"], extra)
    assert check.returncode == 0, output(check)[-3000:]
    assert "Would write /opt/nosuchapp/nosuchapp.env" in " ".join(output(check).split())
    assert "app_env_changed=True" in output(check)
