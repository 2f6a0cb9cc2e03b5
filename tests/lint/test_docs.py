"""The documentation names files that exist, and its own files follow one case style."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

from gltest import REPO

DOCUMENTS = [REPO / "README.md"] + sorted((REPO / "docs").rglob("*.md"))
# Inventories the docs tell users to create by copying inventories/example/<env>.
USER_INVENTORIES = {"inventories/staging": "inventories/example/staging",
                    "inventories/production": "inventories/example/production"}
PLACEHOLDER = re.compile(r"[<>*{}$…]|\.\.\.")
MARKDOWN_LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


def top_level_names() -> list[str]:
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return sorted({line.split("/", 1)[0] for line in tracked.splitlines() if not line.startswith(".")})


def ignored(path: str) -> bool:
    """Generated output (bench results and the like) named in .gitignore."""
    return subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO, check=False).returncode == 0


def referenced_paths(document: Path, tops: list[str]) -> set[tuple[str, Path]]:
    """(path as written, where it must exist) for repo paths and relative Markdown links."""
    text = document.read_text()
    found = set()
    # Not a Markdown link's target: those are relative to the document (checked below).
    pattern = re.compile(r"(?<![\w./~@-])(?<!\]\()((?:%s)(?:/[\w.@-]*)*)" % "|".join(re.escape(t) for t in tops))
    for match in pattern.finditer(text):
        written = match.group(1).rstrip(".:,")
        end = match.end(1)
        if PLACEHOLDER.search(text[match.start(1):end + 3]) or (written in tops and "/" not in written
                                                               and not Path(REPO / written).is_file()):
            continue  # a pattern (<app>, *.yml, {a,b}) or a bare word like "tests" in prose
        found.add((written, REPO / written))
    for link in MARKDOWN_LINK.findall(text):
        if "://" in link or link.startswith("mailto:") or PLACEHOLDER.search(link):
            continue
        found.add((link, (document.parent / link).resolve()))
    return found


def test_every_path_the_docs_name_exists() -> None:
    tops = top_level_names()
    missing = []
    for document in DOCUMENTS:
        for written, target in sorted(referenced_paths(document, tops)):
            relative = written
            for user_path, example in USER_INVENTORIES.items():
                if written == user_path or written.startswith(user_path + "/"):
                    target = REPO / (example + written[len(user_path):])
            if not target.exists() and not ignored(relative):
                missing.append("%s: %s" % (document.relative_to(REPO), written))
    assert missing == []


def test_the_path_check_sees_a_missing_file(tmp_path: Path) -> None:
    document = REPO / "docs" / "zz-test-only.md"
    document.write_text("Run `playbooks/no_such_playbook.yml` and see [the guide](no-such-guide.md);"
                        " `playbooks/<name>.yml` is a pattern.\n")
    try:
        written = {w for w, target in referenced_paths(document, top_level_names()) if not target.exists()}
    finally:
        document.unlink()
    assert written == {"playbooks/no_such_playbook.yml", "no-such-guide.md"}


def test_docs_file_names_are_lower_case() -> None:
    upper = [str(p.relative_to(REPO)) for p in (REPO / "docs").rglob("*") if p.name != p.name.lower()]
    assert upper == []
