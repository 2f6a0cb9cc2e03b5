"""galaxy.yml and meta/runtime.yml say what the collection really is: it declares as dependencies
exactly the collections its shipped plugins, roles and playbooks call by FQCN (each with a version
range), requires the ansible-core the suite runs, and carries the links README gives."""
from __future__ import annotations

import re
import typing as t
from pathlib import Path

import yaml
from ansible.module_utils.compat.version import LooseVersion
from ansible.release import __version__ as ansible_core_version

from gltest import REPO

SHIPPED_CODE = ("plugins", "roles", "playbooks", "meta")
OWN = {"greenlight.deploy", "ansible.builtin", "ansible.legacy"}
FQCN = re.compile(r"^([a-z0-9_]+\.[a-z0-9_]+)\.[a-z0-9_]+(\.[a-z0-9_]+)*$")
# Filters, tests and lookups named by FQCN inside Jinja expressions.
JINJA_FQCN = re.compile(r"(?:\|\s*|\bis\s+(?:not\s+)?|(?:lookup|query|q)\(\s*['\"])([a-z0-9_]+\.[a-z0-9_]+)\.[a-z0-9_]+")
# Values that name a plugin or a role.
PLUGIN_KEYS = {"connection", "ansible_connection", "become_method", "strategy", "role", "roles", "collections",
               "module", "action", "local_action"}
PYTHON_IMPORT = re.compile(r"^\s*(?:from|import)\s+ansible_collections\.([a-z0-9_]+)\.([a-z0-9_]+)", re.M)


def _walk(node: t.Any, key: t.Optional[str], found: set[str]) -> None:
    if isinstance(node, dict):
        for name, value in node.items():
            match = FQCN.match(str(name))
            if match:
                found.add(match.group(1))
            _walk(value, str(name), found)
    elif isinstance(node, list):
        for item in node:
            _walk(item, key, found)
    elif isinstance(node, str):
        found.update(JINJA_FQCN.findall(node))
        if key in PLUGIN_KEYS:
            match = FQCN.match(node.split()[0]) if node.split() else None
            if match:
                found.add(match.group(1))


def collections_used(root: Path = REPO) -> dict[str, list[str]]:
    """collection -> files of the shipped code that use it (task keys, plugin-naming values,
    Jinja filters/tests/lookups, Python imports)."""
    used: dict[str, list[str]] = {}
    for top in SHIPPED_CODE:
        for path in sorted((root / top).rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts:
                continue
            found: set[str] = set()
            text = path.read_text(errors="replace")
            if path.suffix in (".yml", ".yaml"):
                for document in yaml.safe_load_all(text):
                    _walk(document, None, found)
                    # include_role / import_role name the role in `name`.
                    for block in re.findall(r"(?:include_role|import_role):\s*\n\s+name:\s*([a-z0-9_.]+)", text):
                        match = FQCN.match(block)
                        if match:
                            found.add(match.group(1))
            elif path.suffix == ".py":
                found.update("%s.%s" % m for m in PYTHON_IMPORT.findall(text))
            elif path.suffix == ".j2":
                found.update(JINJA_FQCN.findall(text))
            for collection in found - OWN:
                used.setdefault(collection, []).append(str(path.relative_to(root)))
    return used


def galaxy() -> dict[str, t.Any]:
    return yaml.safe_load((REPO / "galaxy.yml").read_text())


def test_the_scanner_sees_each_kind_of_use(tmp_path: Path) -> None:
    (tmp_path / "roles" / "r" / "tasks").mkdir(parents=True)
    (tmp_path / "roles" / "r" / "tasks" / "main.yml").write_text(
        "- name: A module\n  community.general.ini_file: {path: /x}\n"
        "- name: A filter\n  ansible.builtin.debug:\n    msg: \"{{ x | community.crypto.openssl_csr_info }}\"\n"
        "- name: A role\n  ansible.builtin.include_role:\n    name: community.postgresql.server\n")
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "p.yml").write_text(
        "- name: P\n  hosts: all\n  vars:\n    ansible_connection: community.docker.docker\n  tasks: []\n")
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "x.py").write_text("from ansible_collections.kubernetes.core.plugins import y\n")
    (tmp_path / "meta").mkdir()
    assert sorted(collections_used(tmp_path)) == ["community.crypto", "community.docker", "community.general",
                                                  "community.postgresql", "kubernetes.core"]


def test_declared_dependencies_are_exactly_the_collections_the_shipped_code_uses() -> None:
    declared = galaxy().get("dependencies") or {}
    used = collections_used()
    assert set(declared) == set(used), {"declared, unused": sorted(set(declared) - set(used)),
                                        "used, undeclared": {c: used[c] for c in set(used) - set(declared)}}
    for collection, version in declared.items():
        # A range: a lower bound (what the code needs) and an upper bound (the next major).
        assert re.fullmatch(r">=\d+\.\d+\.\d+,<\d+\.\d+\.\d+", str(version)), (collection, version)


def test_galaxy_metadata_is_real_and_matches_the_readme() -> None:
    meta = galaxy()
    readme = (REPO / "README.md").read_text()
    for key in ("repository", "documentation", "issues"):
        assert meta.get(key, "").startswith("https://") and "example" not in meta[key], (key, meta.get(key))
        assert meta[key] in readme, "README does not give the %s link %s" % (key, meta[key])
    assert meta["license"] == ["GPL-3.0-or-later"] and (REPO / "COPYING").is_file()
    assert "GNU GENERAL PUBLIC LICENSE" in (REPO / "COPYING").read_text()[:200]
    assert all(re.fullmatch(r"[a-z0-9_]{1,64}", tag) for tag in meta["tags"]) and len(meta["tags"]) <= 20
    assert meta["description"].strip() and len(meta["description"]) < 400
    for ignored in (".venv", ".testbed", "tests", "testbed", "molecule", "bench", "examples", "**/*.vault-pass"):
        assert ignored in meta["build_ignore"], ignored


def test_requires_ansible_is_the_ansible_core_the_suite_runs_and_what_readme_says() -> None:
    runtime = yaml.safe_load((REPO / "meta" / "runtime.yml").read_text())
    match = re.fullmatch(r">=(\d+\.\d+)\.0", runtime["requires_ansible"])
    assert match, runtime["requires_ansible"]
    lowest = match.group(1)
    installed = ".".join(ansible_core_version.split(".")[:2])
    assert LooseVersion(lowest) <= LooseVersion(installed), (lowest, installed)
    pinned = re.search(r"^ansible-core==(\d+\.\d+)\.", (REPO / "requirements.txt").read_text(), re.M).group(1)
    assert lowest == pinned, "requires_ansible %s, the suite runs ansible-core %s" % (lowest, pinned)
    assert "ansible-core ≥ %s" % lowest in (REPO / "README.md").read_text()
