"""Bad input to playbooks/setup.yml stops it before it changes anything, with a message that
names what is wrong; the example and demo inventories decrypt with their documented vault ids.

The servers are throwaway `greenlight/server:bookworm` containers reached with `docker exec`.
Whether Ansible touched one at all shows in its /root/.ansible (the remote temp directory every
task run creates; the control test proves it does).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"
EXAMPLE = REPO / "inventories" / "example"
EXAMPLE_PASSWORD = EXAMPLE / "EXAMPLE-VAULT-PASSWORD-DO-NOT-USE.txt"
DEMO = REPO / "inventories" / "demo"
DEMO_PASSWORD = DEMO / "vault-password.DEMO-ONLY.txt"
VAULT_CLIENT = REPO / "inventories" / "vault-pass-from-env-client.sh"
DOCUMENTED_VAULT_NAMES = {"vault_django_secret_key", "vault_registry_token", "vault_email_host_password"}

pytestmark = pytest.mark.docker


def env(**extra: str) -> dict[str, str]:
    return dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / ".collections"), ANSIBLE_NOCOLOR="1",
                ANSIBLE_FORCE_COLOR="false", PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra)


def run(argv: list[str], **extra_env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO, env=env(**extra_env), capture_output=True, text=True,
                          check=False, timeout=300)


def flat(proc: subprocess.CompletedProcess[str]) -> str:
    return " ".join((proc.stdout + proc.stderr).split())


@pytest.fixture
def servers(request):
    """Start throwaway servers; returns a function making one more, named uniquely."""
    started: list[str] = []

    def start() -> str:
        name = f"gl-setup-inputs-{secrets.token_hex(4)}"
        subprocess.run(["docker", "run", "-d", "--rm", "--name", name, "greenlight/server:bookworm",
                        "sleep", "600"], check=True, capture_output=True)
        started.append(name)
        return name

    yield start
    for name in started:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def touched(server: str) -> bool:
    return subprocess.run(["docker", "exec", server, "test", "-e", "/root/.ansible"],
                          capture_output=True, check=False).returncode == 0


def inventory(tmp_path: Path, servers_by_group: dict[str, list[str]], env_name: str = "staging",
              vars_override: dict | None = None, host_vars: dict[str, dict] | None = None) -> Path:
    """A copy of inventories/example/<env> (vault included) whose hosts are the given containers."""
    root = tmp_path / f"inventory-{secrets.token_hex(3)}"
    shutil.copytree(EXAMPLE / env_name, root)
    hosts = {group: {"hosts": {name: {"ansible_connection": "community.docker.docker",
                                      "ansible_python_interpreter": "/usr/bin/python3"}
                               for name in names}}
             for group, names in servers_by_group.items()}
    (root / "hosts.yml").write_text(yaml.safe_dump(hosts))
    if vars_override is not None:
        vars_file = root / "group_vars" / env_name / "vars.yml"
        data = yaml.safe_load(vars_file.read_text())
        for key, value in vars_override.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        vars_file.write_text(yaml.safe_dump(data))
    for host, values in (host_vars or {}).items():
        (root / "host_vars").mkdir(exist_ok=True)
        (root / "host_vars" / f"{host}.yml").write_text(yaml.safe_dump(values))
    return root


def setup(inventory_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run([str(BIN / "ansible-playbook"), "playbooks/setup.yml", "-i", str(inventory_dir), *args])


def test_control_a_run_leaves_its_mark(servers, tmp_path) -> None:
    """If Ansible runs anything on a server, /root/.ansible appears there: the mark the vault tests rely on."""
    server = servers()
    assert not touched(server)
    proc = setup(inventory(tmp_path, {"staging": [server]}), "--vault-id", f"staging@{EXAMPLE_PASSWORD}",
                 "-e", json.dumps({"greenlight_supported_os": ["Ubuntu 24.04"]}))
    assert proc.returncode != 0
    assert touched(server)


@pytest.mark.parametrize("vault_args", [["--vault-id", "staging@WRONG"], []], ids=["wrong-password", "no-password"])
def test_vault_that_does_not_open_stops_before_any_server_is_touched(servers, tmp_path, vault_args) -> None:
    server = servers()
    if vault_args:
        wrong = tmp_path / "wrong-password"
        wrong.write_text("not-the-password\n")
        vault_args = ["--vault-id", f"staging@{wrong}"]
    proc = setup(inventory(tmp_path, {"staging": [server]}), *vault_args)
    assert proc.returncode != 0
    assert "Decryption failed" in flat(proc) or "no vault secrets" in flat(proc), flat(proc)[-2000:]
    assert "TASK [" not in proc.stdout, "no task may start"
    assert not touched(server)


def test_unsupported_os_fails_in_preflight_listing_supported_ones(servers, tmp_path) -> None:
    server = servers()
    proc = setup(inventory(tmp_path, {"staging": [server]}), "--vault-id", f"staging@{EXAMPLE_PASSWORD}",
                 "-e", json.dumps({"greenlight_supported_os": ["Ubuntu 24.04", "Ubuntu 22.04"]}))
    assert proc.returncode != 0
    assert "greenlight.deploy supports Ubuntu 24.04, Ubuntu 22.04" in flat(proc)
    assert f"{server} runs Debian 12" in flat(proc)
    assert "PLAY [Setup | Docker" not in proc.stdout


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"registry_login_password": None}, "set registry_login_password (role registry_login"),
        ({"registry_login_username": None, "greenlight_registry": None},
         "set greenlight_registry (registry host[:port]), registry_login_username (role registry_login)"),
        ({"app_env_secrets": {"DJANGO_SECRET_KEY": "{{ vault_not_in_the_vault }}"}},
         "role app_env, {server}: the values of app_env_secrets.DJANGO_SECRET_KEY are undefined"),
        ({"app_env_vars": None, "app_env_secrets": None}, "role app_env, {server}: set app_env_vars and/or app_env_secrets"),
    ],
    ids=["no-registry-password", "no-registry-user-nor-registry", "vault-variable-missing", "no-env-file-values"],
)
def test_missing_setting_fails_in_preflight_naming_it_and_the_role(servers, tmp_path, override, message) -> None:
    server = servers()
    proc = setup(inventory(tmp_path, {"staging": [server]}, vars_override=override),
                 "--vault-id", f"staging@{EXAMPLE_PASSWORD}")
    assert proc.returncode != 0
    assert message.format(server=server) in flat(proc), flat(proc)[-2000:]
    assert "PLAY [Setup | Docker" not in proc.stdout


def test_one_bad_server_stops_every_server_before_any_role(servers, tmp_path) -> None:
    good, bad = servers(), servers()
    proc = setup(inventory(tmp_path, {"staging": [good, bad]}, host_vars={bad: {"registry_login_username": ""}}),
                 "--vault-id", f"staging@{EXAMPLE_PASSWORD}")
    assert proc.returncode != 0
    assert "registry_login_username (role registry_login)" in flat(proc)
    assert "PLAY [Setup | Docker" not in proc.stdout
    for server in (good, bad):
        assert subprocess.run(["docker", "exec", server, "sh", "-c", "command -v dockerd || id deploy"],
                              capture_output=True, check=False).returncode != 0


@pytest.mark.parametrize(("env_name", "host"), [("staging", "staging.example.com"), ("production", "www.example.com")])
def test_example_vault_opens_with_its_vault_id(env_name, host) -> None:
    vault = EXAMPLE / env_name / "group_vars" / env_name / "vault.yml"
    assert vault.read_text().startswith(f"$ANSIBLE_VAULT;1.2;AES256;{env_name}\n")
    view = run([str(BIN / "ansible-vault"), "view", "--vault-id", f"{env_name}@{EXAMPLE_PASSWORD}", str(vault)])
    assert view.returncode == 0, view.stderr
    assert set(yaml.safe_load(view.stdout)) == DOCUMENTED_VAULT_NAMES
    # The plain vars resolve through the vault: every documented name is used.
    proc = run([str(BIN / "ansible"), host, "-i", str(EXAMPLE / env_name), "--vault-id",
                f"{env_name}@{EXAMPLE_PASSWORD}", "-m", "ansible.builtin.debug",
                "-a", "msg={{ [app_env_secrets.DJANGO_SECRET_KEY, registry_login_password, app_env_secrets.EMAIL_HOST_PASSWORD] }}"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(f"example-{env_name}-") == 3


def test_demo_vault_opens_with_the_demo_vault_id() -> None:
    vault = DEMO / "group_vars" / "staging" / "vault.yml"
    assert vault.read_text().startswith("$ANSIBLE_VAULT;1.2;AES256;demo\n")
    proc = run([str(BIN / "ansible-inventory"), "-i", str(DEMO), "--vault-id", f"demo@{DEMO_PASSWORD}",
                "--host", "greenlight-demo"])
    assert proc.returncode == 0, proc.stderr
    demo_vars = json.loads(proc.stdout)
    assert demo_vars["vault_django_secret_key"].startswith("demo-only-")
    assert demo_vars["ansible_connection"] == "community.docker.docker"
    # Only the demo host: no password file parsed as an inventory source.
    graph = run([str(BIN / "ansible-inventory"), "-i", str(DEMO), "--vault-id", f"demo@{DEMO_PASSWORD}", "--graph"])
    assert [line.strip(" |-@:") for line in graph.stdout.splitlines()] == ["all", "ungrouped", "staging", "greenlight-demo"]


def test_ci_vault_client_reads_the_password_by_vault_id(tmp_path) -> None:
    vault = EXAMPLE / "staging" / "group_vars" / "staging" / "vault.yml"
    password = EXAMPLE_PASSWORD.read_text().strip()
    by_id = run([str(BIN / "ansible-vault"), "view", "--vault-id", f"staging@{VAULT_CLIENT}", str(vault)],
                GREENLIGHT_VAULT_PASSWORD_STAGING=password, GREENLIGHT_VAULT_PASSWORD="wrong")
    assert by_id.returncode == 0, by_id.stderr
    assert "vault_django_secret_key" in by_id.stdout
    fallback = run([str(BIN / "ansible-vault"), "view", "--vault-id", f"staging@{VAULT_CLIENT}", str(vault)],
                   GREENLIGHT_VAULT_PASSWORD=password)
    assert fallback.returncode == 0, fallback.stderr
    unset = run([str(BIN / "ansible-vault"), "view", "--vault-id", f"staging@{VAULT_CLIENT}", str(vault)])
    assert unset.returncode != 0
    assert "GREENLIGHT_VAULT_PASSWORD_STAGING" in unset.stdout + unset.stderr
