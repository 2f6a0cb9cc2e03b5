"""Vault password rekey as docs/rotation.md describes it: `ansible-vault rekey` to a new password
and a new vault id; afterwards setup.yml, deploy.yml and rotate_secrets.yml pass their syntax
check with the new --vault-id, deploy.yml runs in check mode against a real server, the env file
setup.yml's app_env role would write from the rekeyed vault equals the server's, and the old
password opens nothing.

Runs against the server of test_rotate_secrets.py (set up once per session: setup + deploy are the
slow part), on its own copy of that bed's inventory.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from gltest import REPO, VENV_BIN, ansible_env
from test_rotate_secrets import RotationBed, shared_bed  # the module pytest collected (same bed)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

NEW_VAULT_ID = "staging-2027"


@pytest.fixture(scope="module")
def bed(request: pytest.FixtureRequest) -> RotationBed:
    return shared_bed(request)


def vault_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "ansible-vault"), *args], capture_output=True, text=True, check=False,
                          env=ansible_env(), stdin=subprocess.DEVNULL)


def test_rekey_to_a_new_password_and_vault_id_keeps_setup_and_deploy_working(bed: RotationBed, tmp_path: Path) -> None:
    inventory = tmp_path / "inventory"
    shutil.copytree(bed.inventory, inventory)
    vault = inventory / "group_vars" / "staging" / "vault.yml"
    plain_before = bed.vault_text(vault)
    new_password = tmp_path / "new-vault-password"
    new_password.write_text(secrets.token_urlsafe(32) + "\n")
    new_password.chmod(0o600)

    rekey = vault_cli("rekey", "--vault-id", "staging@%s" % bed.password_file,
                      "--new-vault-id", "%s@%s" % (NEW_VAULT_ID, new_password), str(vault))
    assert rekey.returncode == 0, rekey.stderr
    assert vault.read_bytes().splitlines()[0] == ("$ANSIBLE_VAULT;1.2;AES256;%s" % NEW_VAULT_ID).encode()
    # Same content under the new password; the old one opens nothing.
    assert bed.vault_text(vault, new_password, NEW_VAULT_ID) == plain_before
    old_view = vault_cli("view", "--vault-id", "staging@%s" % bed.password_file, str(vault))
    assert old_view.returncode != 0 and "Decryption failed" in old_view.stderr

    new_id = {"inventory": inventory, "password_file": new_password, "vault_id": NEW_VAULT_ID}
    for playbook in ("setup.yml", "deploy.yml", "rotate_secrets.yml"):
        syntax = bed.playbook(playbook, "--syntax-check", **new_id)
        assert syntax.returncode == 0, syntax.stdout + syntax.stderr

    # deploy.yml in check mode loads and decrypts the vars and talks to the server: v1 is live.
    deploy = bed.playbook("deploy.yml", "--check", "-e", "app_image_tag=v1", **new_id)
    assert deploy.returncode == 0, deploy.stdout[-4000:] + deploy.stderr[-2000:]
    assert re.search(r"%s\s*:\s*ok=\d+\s+changed=0\s+unreachable=0\s+failed=0" % bed.name, deploy.stdout)

    # The role of setup.yml that uses the vault values, in check mode: the env file it would write
    # from the rekeyed vault is the one on the server, byte for byte. (All of setup.yml in check
    # mode takes minutes here and adds nothing about the vault.)
    roles = tmp_path / "env-file.yml"
    roles.write_text("- name: Env file from the rekeyed vault\n  hosts: staging\n  gather_facts: false\n"
                     "  roles:\n    - greenlight.deploy.app_env\n")
    check = subprocess.run([str(VENV_BIN / "ansible-playbook"), str(roles), "--check", "--diff", "-i", str(inventory),
                            "--vault-id", "%s@%s" % (NEW_VAULT_ID, new_password)], cwd=REPO, capture_output=True,
                           text=True, check=False, stdin=subprocess.DEVNULL,
                           env=ansible_env(ANSIBLE_PIPELINING="True", ANSIBLE_NOCOLOR="1"))
    assert check.returncode == 0, check.stdout[-4000:] + check.stderr[-2000:]
    env_task = re.search(r"TASK \[greenlight\.deploy\.app_env : Env file \| Write the env file\][^\n]*\n(\w+): \[",
                         check.stdout)
    assert env_task and env_task.group(1) == "ok", check.stdout[-4000:]

    # The old password no longer runs anything against this inventory.
    old = bed.playbook("deploy.yml", "-e", "app_image_tag=v1", inventory=inventory)
    assert old.returncode != 0 and "Decryption failed" in old.stdout + old.stderr
    assert bed.leaked(check.stdout + check.stderr + deploy.stdout + deploy.stderr) == []
