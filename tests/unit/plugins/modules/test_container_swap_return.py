"""Every key container_swap returns is documented in its RETURN, and RETURN documents no key the
engine never returns. The keys are read from the engine's source: every key it writes into its
result (``result[...] = ``, ``result = {...}``, ``result.update(...)``, ``result.setdefault(...)``)."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from ansible_collections.greenlight.deploy.plugins.modules import container_swap

REPO = Path(__file__).resolve().parents[4]
MODULE_UTILS = REPO / "plugins" / "module_utils"
# The names a result is written through: the engine's Result builder keeps it in `.data` and
# takes facts with `.set(key=...)` (plugins/module_utils/_engine/result.py).
RESULT_NAMES = {"result", "partial", "data"}
# Keys of every Ansible result (documented by Ansible, not in RETURN), and the engine's `action`,
# which the module returns as `swap_action` (Ansible reserves `action`).
ANSIBLE_KEYS = {"changed", "msg", "diff", "failed"}
RENAMED = {"action": "swap_action"}
# Keys the engine <-> playbooks contract of issue 11 adds to every result; the engine of this
# branch does not return them yet. Empty this set once the engine returns them.
CONTRACT_PENDING: set[str] = set()


def engine_sources() -> list[Path]:
    """The files of the swap engine (the package once it exists, else the one-file engine)."""
    package = sorted((MODULE_UTILS / "_engine").glob("*.py"))
    return package if len(package) > 2 else [MODULE_UTILS / "_swap.py"]


def _is_result(node: ast.AST) -> bool:
    return ((isinstance(node, ast.Attribute) and node.attr in RESULT_NAMES)
            or (isinstance(node, ast.Name) and node.id in RESULT_NAMES))


def _constant_keys(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Dict):
        return {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
    return set()


def result_keys(source: str) -> set[str]:
    keys: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if (isinstance(target, ast.Subscript) and _is_result(target.value)
                        and isinstance(target.slice, ast.Constant)):
                    keys.add(target.slice.value)
                if _is_result(target) and node.value is not None:
                    keys |= _constant_keys(node.value)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and _is_result(node.func.value)
              and node.func.attr in ("update", "setdefault", "set")):
            if node.func.attr == "setdefault" and node.args and isinstance(node.args[0], ast.Constant):
                keys.add(node.args[0].value)
            for argument in node.args:
                keys |= _constant_keys(argument)
            keys |= {kw.arg for kw in node.keywords if kw.arg}
    return keys


def returned_keys() -> set[str]:
    keys: set[str] = set()
    for path in engine_sources():
        keys |= result_keys(path.read_text())
    return {RENAMED.get(k, k) for k in keys} - ANSIBLE_KEYS


def test_the_scan_reads_each_way_of_writing_a_key() -> None:
    source = ("def f(self, result):\n"
              "    self.result = {'a': 1}\n    self.result['b'] = 2\n    result.update({'c': 3}, d=4)\n"
              "    result.setdefault('e', [])\n    other['f'] = 5\n    run.result.set(g=6)\n")
    assert result_keys(source) == {"a", "b", "c", "d", "e", "g"}


def test_every_returned_key_is_in_return_and_return_has_no_other() -> None:
    documented = set(yaml.safe_load(container_swap.RETURN))
    returned = returned_keys()
    assert len(returned) >= 20, ("the scan found too few keys: the engine builds its result differently now, "
                                 "teach result_keys() how", sorted(returned))
    assert sorted(returned - documented) == [], "returned but not in RETURN"
    assert sorted(documented - returned - CONTRACT_PENDING) == [], "in RETURN but never returned"
