"""CHANGELOG.md is current: every fragment in changelogs/fragments/ is in changelogs/changelog.yml,
as it reads now, and CHANGELOG.md is what antsibull-changelog renders from that file.
Fix with `make changelog`."""
from __future__ import annotations

import subprocess

import yaml

from gltest import REPO, VENV_BIN, ansible_env

FRAGMENTS = REPO / "changelogs" / "fragments"
CHANGES = REPO / "changelogs" / "changelog.yml"


def releases() -> dict:
    return yaml.safe_load(CHANGES.read_text(encoding="utf-8"))["releases"]


def test_every_fragment_is_in_a_release_as_it_reads_now() -> None:
    config = yaml.safe_load((REPO / "changelogs" / "config.yaml").read_text(encoding="utf-8"))
    assert config["keep_fragments"] is True  # the check below needs the fragments kept
    by_fragment = {name: release for release in releases().values() for name in release.get("fragments", [])}
    fragments = sorted(FRAGMENTS.glob("*.yml"))
    assert fragments
    missing = [f.name for f in fragments if f.name not in by_fragment]
    assert not missing, f"fragments not in CHANGELOG.md: {missing}; run `make changelog`"
    for fragment in fragments:
        changes = by_fragment[fragment.name].get("changes", {})
        for section, entries in (yaml.safe_load(fragment.read_text(encoding="utf-8")) or {}).items():
            if section == "trivial":
                continue
            entries = [entries] if isinstance(entries, str) else entries
            recorded = changes.get(section, [])
            recorded = [recorded] if isinstance(recorded, str) else recorded
            for entry in entries:
                assert entry in recorded, f"{fragment.name} ({section}) changed since `make changelog`; run it again"


def test_changelog_md_is_rendered_from_the_releases(tmp_path) -> None:
    rendered = tmp_path / "CHANGELOG.md"
    proc = subprocess.run([str(VENV_BIN / "antsibull-changelog"), "generate", "--output", str(rendered),
                           "--output-format", "md"], cwd=REPO, env=ansible_env(), capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert rendered.read_text(encoding="utf-8") == (REPO / "CHANGELOG.md").read_text(encoding="utf-8"), \
        "CHANGELOG.md differs from what changelogs/changelog.yml renders; run `make changelog`"
