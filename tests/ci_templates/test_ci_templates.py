"""The CI templates in ci-templates/ are valid and run exactly what the end-to-end test runs.

Each template (Woodpecker, GitHub Actions, GitLab CI) must: parse as YAML; run the deploy command
of ci-templates/deploy-command.txt verbatim (tests/e2e runs the same file's command against real
servers over SSH) and the promote command of ci-templates/promote-command.txt; only name
playbooks that exist and `-e` variables that docs/deploy.md documents; never switch host key
checking off; deploy only from the main branch; promote only behind a manual gate; take the vault
password and SSH key from CI secrets; validate against its CI system's official schema (the schemas
check-jsonschema vendors, read offline); run from the user's app repository, with the collection
installed from its collections/requirements.yml and playbooks named by FQCN.
"""
from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
import typing as t

import pytest
import yaml

from gltest import REPO, VENV_BIN, ansible_env

TEMPLATES_DIR = REPO / "ci-templates"
TEMPLATES = ("woodpecker.yml", "github-actions.yml", "gitlab-ci.yml")
DEPLOY_COMMAND = (TEMPLATES_DIR / "deploy-command.txt").read_text(encoding="utf-8").strip()
PROMOTE_COMMAND = (TEMPLATES_DIR / "promote-command.txt").read_text(encoding="utf-8").strip()
VAULT_CLIENT = REPO / "inventories" / "vault-pass-from-env-client.sh"


def load(name: str) -> t.Any:
    return yaml.safe_load((TEMPLATES_DIR / name).read_text(encoding="utf-8"))


def shell_lines(name: str) -> list[str]:
    """Every shell line a template runs (Woodpecker commands, GitHub run, GitLab script/before_script),
    as the shell gets it (Woodpecker turns an escaped $$ into $ before the shell runs)."""
    lines: list[str] = []

    def walk(node: t.Any, key: str | None = None) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, list):
            for item in node:
                walk(item, key)
        elif isinstance(node, str) and key in ("commands", "run", "script", "before_script"):
            lines.extend(part.strip() for part in node.splitlines() if part.strip())

    walk(load(name))
    if name == "woodpecker.yml":
        lines = [line.replace("$$", "$") for line in lines]
    return lines


def jobs_running(name: str, command: str) -> list[tuple[str, dict[str, t.Any]]]:
    """(job or step name, its definition) of the jobs whose shell lines include `command`."""
    doc = load(name)
    found = []
    if name == "woodpecker.yml":
        for step in doc["steps"]:
            if command in [c.strip() for c in step.get("commands", [])]:
                found.append((step["name"], step))
    elif name == "github-actions.yml":
        for job_name, job in doc["jobs"].items():
            runs = [line.strip() for s in job.get("steps", []) for line in str(s.get("run", "")).splitlines()]
            if command in runs:
                found.append((job_name, job))
    else:
        for job_name, job in doc.items():
            if isinstance(job, dict) and command in [c.strip() for c in job.get("script", [])]:
                found.append((job_name, job))
    return found


def documented_variables() -> set[str]:
    """Variable names in the first column of the tables of docs/deploy.md."""
    text = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    return set(re.findall(r"^\|\s*`([a-z_][a-z0-9_]*)`\s*\|", text, flags=re.MULTILINE))


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_parses_as_yaml(name: str) -> None:
    doc = load(name)
    assert isinstance(doc, dict) and doc


def test_commands_are_one_line_each() -> None:
    assert DEPLOY_COMMAND.startswith("ansible-playbook greenlight.deploy.deploy -i deploy/inventories/staging ")
    assert PROMOTE_COMMAND.startswith("ansible-playbook greenlight.deploy.promote ")
    assert "\n" not in DEPLOY_COMMAND and "\n" not in PROMOTE_COMMAND
    assert "app_image_tag=" in DEPLOY_COMMAND
    # Woodpecker pre-processes ${VAR}; the shared command must not contain that form.
    assert "${" not in DEPLOY_COMMAND and "${" not in PROMOTE_COMMAND


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_runs_the_e2e_deploy_command_verbatim(name: str) -> None:
    assert DEPLOY_COMMAND in shell_lines(name), f"{name} does not run `{DEPLOY_COMMAND}`"
    assert PROMOTE_COMMAND in shell_lines(name), f"{name} does not run `{PROMOTE_COMMAND}`"


def test_e2e_test_runs_the_same_commands() -> None:
    e2e = (REPO / "tests" / "e2e" / "test_e2e_ssh.py").read_text(encoding="utf-8")
    assert "deploy-command.txt" in e2e and "promote-command.txt" in e2e


@pytest.mark.parametrize("name", TEMPLATES)
def test_playbooks_named_exist(name: str) -> None:
    playbooks = set()
    for line in shell_lines(name):
        if line.startswith("ansible-playbook "):
            playbooks.add(shlex.split(line)[1])
    assert playbooks, f"{name} runs no playbook"
    for playbook in playbooks:
        # By name from the installed collection: the app repository holds no copy of our playbooks.
        assert playbook.startswith("greenlight.deploy."), f"{name} runs {playbook}, not a playbook of the collection by name"
        path = REPO / "playbooks" / (playbook.removeprefix("greenlight.deploy.") + ".yml")
        assert path.is_file(), f"{name} runs {playbook}, which the collection does not have"


SCHEMAS = {"woodpecker.yml": "vendor.woodpecker-ci", "github-actions.yml": "vendor.github-workflows",
           "gitlab-ci.yml": "vendor.gitlab-ci"}


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_validates_against_its_ci_systems_schema(name: str) -> None:
    """The schema each CI system publishes, as check-jsonschema vendors it: read from the installed
    package, never fetched (a proxy that refuses every connection proves it)."""
    env = dict(os.environ, HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9",
               https_proxy="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9", NO_PROXY="", no_proxy="")
    proc = subprocess.run([str(VENV_BIN / "check-jsonschema"), "--builtin-schema", SCHEMAS[name],
                           str(TEMPLATES_DIR / name)], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "ok -- validation done" in proc.stdout


def test_schema_check_rejects_what_its_ci_system_rejects(tmp_path) -> None:
    """The check is not vacuous: a step filter current Woodpecker dropped fails it."""
    doc = load("woodpecker.yml")
    doc["steps"][-1]["when"] = [{"event": "deployment", "environment": "production", "branch": "main"}]
    broken = tmp_path / "woodpecker.yml"
    broken.write_text(yaml.safe_dump(doc))
    proc = subprocess.run([str(VENV_BIN / "check-jsonschema"), "--builtin-schema", SCHEMAS["woodpecker.yml"],
                           str(broken)], capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "'environment' was unexpected" in proc.stdout


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_installs_the_collection_the_app_repository_names(name: str) -> None:
    lines = shell_lines(name)
    assert "ansible-galaxy collection install -r collections/requirements.yml -p collections" in lines
    text = (TEMPLATES_DIR / name).read_text(encoding="utf-8")
    assert "ln -sfn" not in text and "playbooks/" not in text and " inventories/" not in text


@pytest.mark.parametrize("name", TEMPLATES)
def test_extra_vars_are_documented(name: str) -> None:
    documented = documented_variables()
    assert {"app_image_tag", "rollback_release", "restore_database", "promote_git_tags"} <= documented
    for line in shell_lines(name):
        if not line.startswith("ansible-playbook "):
            continue
        args = shlex.split(line)
        for i, arg in enumerate(args):
            if arg in ("-e", "--extra-vars"):
                variable = args[i + 1].split("=", 1)[0]
                assert variable in documented, f"{name} passes -e {variable}, not documented in docs/deploy.md"


@pytest.mark.parametrize("name", TEMPLATES)
def test_host_keys_are_pinned_never_ignored(name: str) -> None:
    text = (TEMPLATES_DIR / name).read_text(encoding="utf-8")
    assert not re.search(r"StrictHostKeyChecking\s*[= ]\s*(no|off|accept-new)", text, re.IGNORECASE)
    assert not re.search(r"UserKnownHostsFile\s*[= ]\s*/dev/null", text, re.IGNORECASE)
    assert not re.search(r"HOST_KEY_CHECKING\W+(false|no|0)\b", text, re.IGNORECASE)
    assert re.search(r"ANSIBLE_HOST_KEY_CHECKING:\s*\"true\"", text)
    lines = shell_lines(name)
    assert any(re.search(r'"\$DEPLOY_KNOWN_HOSTS"\s*>\s*~/\.ssh/known_hosts', line) for line in lines), \
        f"{name} does not pin the servers' host keys from the DEPLOY_KNOWN_HOSTS secret"


@pytest.mark.parametrize("name", TEMPLATES)
def test_secrets_come_from_the_ci_secret_store(name: str) -> None:
    text = (TEMPLATES_DIR / name).read_text(encoding="utf-8")
    assert "staging@deploy/vault-pass-from-env-client.sh" in text
    assert "--vault-password-file" not in text and "--ask-vault" not in text
    lines = shell_lines(name)
    assert any("$DEPLOY_SSH_KEY" in line and "~/.ssh/id_ed25519" in line for line in lines)
    if name == "woodpecker.yml":
        for step in load(name)["steps"]:
            env = step.get("environment", {})
            for key in ("GREENLIGHT_VAULT_PASSWORD_STAGING", "DEPLOY_SSH_KEY", "DEPLOY_KNOWN_HOSTS"):
                if key in env:
                    assert isinstance(env[key], dict) and "from_secret" in env[key]
    elif name == "github-actions.yml":
        assert "GREENLIGHT_VAULT_PASSWORD_STAGING: ${{ secrets.VAULT_PASSWORD_STAGING }}" in text
        assert "${{ secrets.DEPLOY_SSH_KEY }}" in text and "${{ secrets.DEPLOY_KNOWN_HOSTS }}" in text
    else:
        assert "GREENLIGHT_VAULT_PASSWORD_STAGING: $VAULT_PASSWORD_STAGING" in text


@pytest.mark.parametrize("name", TEMPLATES)
def test_deploy_only_from_main(name: str) -> None:
    jobs = jobs_running(name, DEPLOY_COMMAND)
    assert jobs
    for job_name, job in jobs:
        if name == "woodpecker.yml":
            conditions = job["when"]
            assert conditions and all(c.get("branch") == "main" and c.get("event") == "push" for c in conditions), job_name
        elif name == "github-actions.yml":
            assert "github.ref == 'refs/heads/main'" in job["if"] and "github.event_name == 'push'" in job["if"]
        else:
            rules = job["rules"]
            assert rules and all('$CI_COMMIT_BRANCH == "main"' in r["if"] for r in rules), job_name


@pytest.mark.parametrize("name", TEMPLATES)
def test_image_is_built_and_pushed_with_the_tag_that_is_deployed(name: str) -> None:
    lines = shell_lines(name)
    pushes = [line for line in lines if line.startswith("docker push ")]
    assert pushes and all(line.endswith(':$APP_IMAGE_TAG"') for line in pushes), pushes
    tag_sources = {"woodpecker.yml": 'export APP_IMAGE_TAG=$(echo "$CI_COMMIT_SHA" | cut -c1-7)',
                   "gitlab-ci.yml": 'export APP_IMAGE_TAG="$CI_COMMIT_SHORT_SHA"'}
    if name in tag_sources:
        assert lines.count(tag_sources[name]) >= 2  # the build and the deploy compute the same tag
    else:
        # The build job exports the tag and hands it to the deploy job as an output.
        assert 'export APP_IMAGE_TAG=$(echo "$GITHUB_SHA" | cut -c1-7)' in lines
        text = (TEMPLATES_DIR / name).read_text(encoding="utf-8")
        assert "APP_IMAGE_TAG: ${{ needs.build.outputs.tag }}" in text


@pytest.mark.parametrize("name", TEMPLATES)
def test_production_only_behind_a_manual_gate(name: str) -> None:
    jobs = jobs_running(name, PROMOTE_COMMAND)
    assert len(jobs) == 1
    job_name, job = jobs[0]
    if name == "woodpecker.yml":
        assert all(c.get("event") == "deployment" and c.get("evaluate") == 'CI_PIPELINE_DEPLOY_TARGET == "production"'
                   for c in job["when"])
    elif name == "github-actions.yml":
        assert job["environment"] == "production" and "deploy-staging" in job["needs"]
    else:
        assert all(r.get("when") == "manual" for r in job["rules"]) and job["environment"]["name"] == "production"
    text = (TEMPLATES_DIR / name).read_text(encoding="utf-8")
    assert "production@deploy/vault-pass-from-env-client.sh" in text


def test_vault_password_client_is_executable() -> None:
    assert VAULT_CLIENT.stat().st_mode & stat.S_IXUSR


def test_vault_password_client_decrypts_with_the_password_from_the_environment(tmp_path) -> None:
    password_file = tmp_path / "pw"
    password_file.write_text("correct horse battery staple\n")
    encrypted = tmp_path / "vault.yml"
    encrypted.write_text("vault_canary: hello-from-vault\n")
    env = ansible_env()
    subprocess.run([str(VENV_BIN / "ansible-vault"), "encrypt", "--vault-id", f"staging@{password_file}",
                    str(encrypted)], env=env, check=True, capture_output=True)
    assert "hello-from-vault" not in encrypted.read_text()
    env = ansible_env(GREENLIGHT_VAULT_PASSWORD_STAGING="correct horse battery staple")
    env.pop("GREENLIGHT_VAULT_PASSWORD", None)
    view = subprocess.run([str(VENV_BIN / "ansible-vault"), "view", "--vault-id", f"staging@{VAULT_CLIENT}",
                           str(encrypted)], env=env, capture_output=True, text=True, check=False)
    assert view.returncode == 0, view.stderr
    assert "hello-from-vault" in view.stdout
    env["GREENLIGHT_VAULT_PASSWORD_STAGING"] = "wrong"
    wrong = subprocess.run([str(VENV_BIN / "ansible-vault"), "view", "--vault-id", f"staging@{VAULT_CLIENT}",
                            str(encrypted)], env=env, capture_output=True, text=True, check=False)
    assert wrong.returncode != 0


def test_vault_password_client_names_the_missing_variable() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENLIGHT_VAULT_PASSWORD")}
    proc = subprocess.run([str(VAULT_CLIENT), "--vault-id", "production"], env=env, capture_output=True, text=True,
                          check=False)
    assert proc.returncode != 0 and "GREENLIGHT_VAULT_PASSWORD_PRODUCTION" in proc.stderr
