"""`ansible-playbook greenlight.deploy.init` in a fresh app repository (local only, no server).

It writes the deploy settings (inventories, commented vars, vault files encrypted with a supplied or
a generated password, ansible.cfg, collections/requirements.yml, the CI pipeline); never overwrites
a file; --check writes nothing; no secret reaches its output. The end-to-end use of what it writes
(setup and deploy over SSH from the built collection) is in tests/e2e/test_e2e_ssh.py.
"""
from __future__ import annotations

import configparser
import hashlib
import shutil
import stat
import subprocess
import typing as t
from pathlib import Path

import pytest
import yaml

from gltest import REPO, VENV_BIN, ansible_env

ENVIRONMENTS = ("staging", "production")


def init(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = ansible_env(PWD=str(project), ANSIBLE_NOCOLOR="1")
    env.pop("ANSIBLE_CONFIG", None)
    return subprocess.run([str(VENV_BIN / "ansible-playbook"), "greenlight.deploy.init", *args], cwd=project, env=env,
                          capture_output=True, text=True, check=False)


def vault_view(project: Path, env_name: str, password_file: Path) -> dict[str, t.Any]:
    vault = project / "deploy" / "inventories" / env_name / "group_vars" / env_name / "vault.yml"
    assert vault.read_text().startswith(f"$ANSIBLE_VAULT;1.2;AES256;{env_name}\n")
    proc = subprocess.run([str(VENV_BIN / "ansible-vault"), "view", "--vault-id", f"{env_name}@{password_file}",
                           str(vault)], cwd=project.parent, env=ansible_env(), capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def tree(project: Path) -> dict[str, str]:
    return {str(p.relative_to(project)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(project.rglob("*")) if p.is_file() and ".git" not in p.parts}


def new_app(base: Path) -> Path:
    project = base / "todo"
    project.mkdir()
    (project / "manage.py").write_text("# the app\n")
    (project / ".gitignore").write_text("db.sqlite3\n")
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    return project


@pytest.fixture()
def app(tmp_path: Path) -> Path:
    return new_app(tmp_path)


@pytest.fixture(scope="module")
def initialized(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One repository after `init -e init_ci=github` (each run of init takes seconds: shared)."""
    project = new_app(tmp_path_factory.mktemp("initialized"))
    return project, init(project, "-e", "init_ci=github")


def test_check_mode_writes_nothing_and_names_every_file(app: Path) -> None:
    before = tree(app)
    proc = init(app, "-e", "init_ci=woodpecker", "--check", "--diff")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert tree(app) == before and not (app / "deploy").exists()
    assert "would write: ansible.cfg, collections/requirements.yml" in proc.stdout
    for name in (".woodpecker.yml", "deploy/.vault-pass/staging", "deploy/inventories/production/hosts.yml"):
        assert name in proc.stdout
    assert "+/deploy/.vault-pass/" in proc.stdout  # the .gitignore diff
    assert "vault_django_secret_key: " not in proc.stdout and "$ANSIBLE_VAULT" not in proc.stdout


def test_writes_settings_and_encrypted_vaults_with_generated_passwords(
        initialized: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    app, proc = initialized
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    keys = {}
    for env_name in ENVIRONMENTS:
        password_file = app / "deploy" / ".vault-pass" / env_name
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(password_file.parent.stat().st_mode) == 0o700
        password = password_file.read_text().strip()
        assert len(password) >= 32 and password not in proc.stdout + proc.stderr
        secrets = vault_view(app, env_name, password_file)
        keys[env_name] = secrets["vault_django_secret_key"]
        assert len(keys[env_name]) >= 50 and keys[env_name] not in proc.stdout + proc.stderr
        assert secrets["vault_registry_token"].startswith("REPLACE-ME")
        settings = yaml.safe_load((app / "deploy" / "inventories" / env_name / "group_vars" / env_name / "vars.yml"
                                   ).read_text())
        assert settings["greenlight_app_name"] == "todo"
        assert settings["app_env_secrets"]["DJANGO_SECRET_KEY"] == "{{ vault_django_secret_key }}"
        hosts = yaml.safe_load((app / "deploy" / "inventories" / env_name / "hosts.yml").read_text())
        assert list(hosts) == [env_name] and hosts[env_name]["hosts"]
    assert keys["staging"] != keys["production"]
    assert (app / "deploy" / ".vault-pass" / "staging").read_text() != (app / "deploy" / ".vault-pass" / "production"
                                                                         ).read_text()
    # git ignores the password files and nothing else init wrote.
    assert (app / ".gitignore").read_text().splitlines() == ["db.sqlite3", "/deploy/.vault-pass/"]
    ignored = subprocess.run(["git", "-C", str(app), "status", "--porcelain", "--untracked-files=all"],
                             capture_output=True, text=True, check=True).stdout
    assert ".vault-pass" not in ignored and "deploy/inventories/staging/group_vars/staging/vault.yml" in ignored
    config = configparser.ConfigParser()
    config.read(app / "ansible.cfg")
    assert config["defaults"]["collections_path"] == "./collections"
    assert config["defaults"]["host_key_checking"] == "True"
    assert config["defaults"]["vault_identity_list"] == (
        "staging@deploy/.vault-pass/staging, production@deploy/.vault-pass/production")
    requirements = yaml.safe_load((app / "collections" / "requirements.yml").read_text())
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    assert requirements["collections"][0]["version"] == galaxy["version"]
    assert (app / "deploy" / "vault-pass-from-env-client.sh").stat().st_mode & stat.S_IXUSR
    assert (app / ".github" / "workflows" / "deploy.yml").read_text() == (
        REPO / "ci-templates" / "github-actions.yml").read_text()


def test_a_second_run_overwrites_nothing_and_keeps_the_passwords(
        initialized: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    assert initialized[1].returncode == 0
    app = tmp_path / "todo"
    shutil.copytree(initialized[0], app, symlinks=True)
    (app / "deploy" / "inventories" / "staging" / "hosts.yml").write_text("# mine\nstaging: {hosts: {web1: {}}}\n")
    (app / "ansible.cfg").unlink()
    before = tree(app)
    proc = init(app, "-e", "init_ci=gitlab")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    after = tree(app)
    # Only what was missing is written: ansible.cfg (removed above) and the GitLab pipeline asked for now.
    assert {k: v for k, v in after.items() if k in before} == before
    assert sorted(set(after) - set(before)) == [".gitlab-ci.yml", "ansible.cfg"]
    assert (app / ".github" / "workflows" / "deploy.yml").is_file()  # from the first run, kept
    assert "wrote: ansible.cfg, .gitlab-ci.yml" in proc.stdout
    assert "kept (already there, not changed): " in proc.stdout and "vault passwords generated" not in proc.stdout


def test_a_supplied_password_encrypts_the_vaults_and_is_never_copied(app: Path, tmp_path: Path) -> None:
    """With the Woodpecker pipeline (GitHub and GitLab are written above), one environment only."""
    password_file = tmp_path / "todo.vault-pass"
    password_file.write_text("a password the team keeps elsewhere\n")
    proc = init(app, "-e", f"init_vault_password_file={password_file}", "-e", "init_ci=woodpecker",
                "-e", '{"init_environments": ["staging"]}')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert not (app / "deploy" / ".vault-pass").exists()
    assert vault_view(app, "staging", password_file)["vault_django_secret_key"]
    assert not (app / "deploy" / "inventories" / "production").exists()
    config = configparser.ConfigParser()
    config.read(app / "ansible.cfg")
    assert config["defaults"]["vault_identity_list"] == f"staging@{password_file}"
    assert "a password the team keeps elsewhere" not in proc.stdout + proc.stderr
    assert (app / ".woodpecker.yml").read_text() == (REPO / "ci-templates" / "woodpecker.yml").read_text()


def test_bad_settings_are_refused_before_anything_is_written(app: Path) -> None:
    proc = init(app, "-e", "init_ci=jenkins", "-e", "init_app_name=Not_Valid!")
    assert proc.returncode != 0
    assert "init_ci must be one of woodpecker, github, gitlab, none (got jenkins)" in proc.stdout
    assert "init_app_name Not_Valid! is not a valid app name" in proc.stdout
    assert not (app / "deploy").exists() and not (app / "ansible.cfg").exists()
