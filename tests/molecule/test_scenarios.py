"""Run every Molecule scenario (create, converge, idempotence, verify, destroy) from pytest.

One test per scenario directory under molecule/, so a `make test` run ends with pytest's
summary line and names the scenario that failed.
"""
from __future__ import annotations

import subprocess

import pytest

from gltest import REPO, ansible_env

SCENARIOS = sorted(
    p.parent.name
    for p in (REPO / "molecule").glob("*/molecule.yml")
    if not p.parent.name.startswith("_")
)


def _remove_anonymous_volumes() -> None:
    """Molecule's destroy keeps the anonymous /var/lib/docker volumes of server containers."""
    out = subprocess.run(
        ["docker", "volume", "ls", "-qf", "dangling=true"], capture_output=True, text=True, check=False
    ).stdout.split()
    anonymous = [v for v in out if len(v) == 64 and all(c in "0123456789abcdef" for c in v)]
    if anonymous:
        subprocess.run(["docker", "volume", "rm", *anonymous], capture_output=True, check=False)


@pytest.mark.molecule
@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario(scenario: str, docker_available: None) -> None:
    proc = subprocess.run(
        ["molecule", "test", "-s", scenario],
        cwd=REPO,
        env=ansible_env(PY_COLORS="0", ANSIBLE_NOCOLOR="1", NO_COLOR="1"),
        capture_output=True,
        text=True,
        check=False,
    )
    _remove_anonymous_volumes()
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-120:])
        pytest.fail(f"molecule scenario {scenario} failed (rc={proc.returncode}):\n{tail}")
