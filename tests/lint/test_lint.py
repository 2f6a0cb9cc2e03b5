"""Static checks: yamllint, ansible-lint (production profile), and the collection builds,
installs and documents its plugins."""
from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import prewarm  # tests/prewarm.py
from gltest import REPO, VENV_BIN, ansible_env

PREWARM = "ansible-lint"


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO, env=ansible_env(), capture_output=True, text=True, check=False, **kw)


def test_yamllint_clean() -> None:
    proc = _run([str(VENV_BIN / "yamllint"), "-s", "."])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def ansible_lint(home: Path, job: prewarm.Job | None = None) -> subprocess.CompletedProcess[str]:
    # ansible-lint puts ~/.ansible/collections before ANSIBLE_COLLECTIONS_PATH: a copy of
    # greenlight.deploy installed there earlier (by hand, or an older ansible-lint) would be linted
    # against instead of this checkout. A HOME of its own leaves only this checkout's collection.
    proc = subprocess.Popen([str(VENV_BIN / "ansible-lint"), "--profile", "production", "--offline", "-q", "--nocolor"],
                            cwd=REPO, env=ansible_env(HOME=str(home)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    if job is not None:
        job.abort = proc.kill  # the session ends before the test took the result
    stdout, stderr = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def start_in_background(config, first_needed: int) -> None:
    """ansible-lint (a minute of one core) starts once collection is done (tests/lint/conftest.py)."""
    home = config._tmp_path_factory.mktemp("ansible-lint-home")
    prewarm.register(PREWARM, lambda job: ansible_lint(home, job), first_needed=first_needed)


def test_ansible_lint_production_profile(tmp_path) -> None:
    started = prewarm.take(PREWARM)
    proc = started.result() if started else ansible_lint(tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]


# What the collection tarball may hold (top-level files, and directories with their contents).
SHIPPED_FILES = {"MANIFEST.json", "FILES.json", "README.md", "CHANGELOG.md", "COPYING", "inventories",
                 "inventories/vault-pass-from-env-client.sh"}
SHIPPED_DIRECTORIES = ("meta", "plugins", "roles", "playbooks", "docs", "ci-templates", "inventories/example")


def shipped(name: str) -> bool:
    return name in SHIPPED_FILES or any(name == d or name.startswith(d + "/") for d in SHIPPED_DIRECTORIES)


def test_collection_builds_installs_and_lists_plugins(tmp_path) -> None:
    build = _run([str(VENV_BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(tmp_path), "--force"])
    assert build.returncode == 0, build.stdout + build.stderr
    tarballs = list(tmp_path.glob("greenlight-deploy-*.tar.gz"))
    assert len(tarballs) == 1
    with tarfile.open(tarballs[0]) as tar:
        names = tar.getnames()
    # The collection only: what users run and read. No tests, test bed, benchmarks, example app,
    # Molecule scenarios, developer tooling, and no vault password file of any kind.
    assert not [n for n in names if not shipped(n)], [n for n in names if not shipped(n)]
    assert not [n for n in names if "password" in n.lower() or n.endswith(".vault-pass")], names
    for gone in ("tests", "testbed", "bench", "examples", "molecule", "inventories/demo", ".testbed", ".venv",
                 ".collections", "changelogs/fragments", "Makefile", "requirements.txt"):
        assert not [n for n in names if n == gone or n.startswith(gone + "/")], gone
    for wanted in ("MANIFEST.json", "FILES.json", "README.md", "meta/runtime.yml", "plugins/modules/container_swap.py",
                   "roles/deploy_script/tasks/main.yml", "playbooks/deploy.yml", "docs/deploy.md",
                   "ci-templates/deploy-command.txt", "inventories/vault-pass-from-env-client.sh",
                   "inventories/example/staging/hosts.yml"):
        assert wanted in names, wanted

    dest = tmp_path / "installed"
    install = _run([str(VENV_BIN / "ansible-galaxy"), "collection", "install", "--offline", "--no-deps", "--force",
                    "-p", str(dest), str(tarballs[0])])
    assert install.returncode == 0, install.stdout + install.stderr
    env = ansible_env(ANSIBLE_COLLECTIONS_PATH=str(dest))
    listing = subprocess.run([str(VENV_BIN / "ansible-doc"), "-l", "greenlight.deploy"], env=env,
                             capture_output=True, text=True, check=False)
    assert listing.returncode == 0, listing.stderr
    plugins = sorted((REPO / "plugins" / "modules").glob("[!_]*.py"))
    assert plugins, "the collection ships no modules"
    for plugin in plugins:
        assert f"greenlight.deploy.{plugin.stem}" in listing.stdout, listing.stdout
    # ansible-doc -l lists a module whose DOCUMENTATION is not valid YAML; rendering it does not.
    for plugin in plugins:
        doc = subprocess.run([str(VENV_BIN / "ansible-doc"), "-t", "module", f"greenlight.deploy.{plugin.stem}"],
                             env=env, capture_output=True, text=True, check=False)
        assert doc.returncode == 0 and "ERROR" not in doc.stderr, (plugin.name, doc.stderr[-2000:])
        assert "EXAMPLES:" in doc.stdout and "RETURN VALUES:" in doc.stdout, (plugin.name, doc.stdout[-2000:])


# antsibull-changelog reads changelogs/config.yaml by that fixed name: the one file kept as .yaml.
YAML_EXTENSION_EXCEPTIONS = {"changelogs/config.yaml"}


def test_every_yaml_file_of_ours_ends_in_yml() -> None:
    tracked = _run(["git", "ls-files", "-z"])
    assert tracked.returncode == 0, tracked.stderr
    names = [n for n in tracked.stdout.split("\0") if n]
    assert names, "git ls-files listed nothing"
    yaml = [n for n in names if n.endswith(".yaml") and n not in YAML_EXTENSION_EXCEPTIONS]
    assert not yaml, "rename to .yml (git mv) and update every reference: %s" % yaml
