"""Every user-facing command names a playbook by FQCN and a user's inventory, as run from an app
repository (docs/install.md): README.md, docs/ (but the benchmark and reliability reports, which
describe runs in this checkout) and ci-templates/."""
from __future__ import annotations

import re

from gltest import REPO

USER_FACING = [REPO / "README.md"] + [p for p in sorted((REPO / "docs").rglob("*.md"))
                                      if p.name not in ("benchmarks.md", "reliability.md")] \
    + sorted((REPO / "ci-templates").iterdir())


def test_playbooks_are_named_by_fqcn_and_exist() -> None:
    by_path, unknown, named = [], [], set()
    for document in USER_FACING:
        text = document.read_text(encoding="utf-8")
        for line in text.splitlines():
            if re.search(r"ansible-playbook\s+(\./)?playbooks/", line) or re.search(r"\s-i\s+inventories/", line):
                by_path.append(f"{document.relative_to(REPO)}: {line.strip()}")
        for name in re.findall(r"ansible-playbook\s+greenlight\.deploy\.([a-z_]+)", text):
            named.add(name)
            if not (REPO / "playbooks" / f"{name}.yml").is_file():
                unknown.append(f"{document.relative_to(REPO)}: greenlight.deploy.{name}")
    assert not by_path, "run playbooks by name from the app repository (greenlight.deploy.<name>, " \
                        "-i deploy/inventories/<env>):\n" + "\n".join(by_path)
    assert not unknown, unknown
    assert {"init", "setup", "deploy", "rollback", "promote", "rotate_secrets"} <= named
