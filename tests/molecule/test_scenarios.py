"""Run every Molecule scenario (create, converge, idempotence, verify, destroy) from pytest.

One test per scenario directory under molecule/, so a `make test` run ends with pytest's
summary line and names the scenario that failed. The scenarios run in the background while the
other tests run (tests/molecule_runner.py, started by tests/conftest.py); each test waits for
its scenario's outcome.
"""
from __future__ import annotations

import pytest

from gltest import REPO

from molecule_runner import run_scenario  # tests/molecule_runner.py (tests/ is on sys.path)

SCENARIOS = sorted(
    p.parent.name
    for p in (REPO / "molecule").glob("*/molecule.yml")
    if not p.parent.name.startswith("_")
)


@pytest.mark.molecule
@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario(scenario: str, docker_available: None, request: pytest.FixtureRequest) -> None:
    background = getattr(request.config, "_greenlight_molecule", None)
    if background is not None and scenario in background.done:
        outcome = background.wait(scenario)
    else:
        outcome = run_scenario(scenario)
    print("molecule scenario %s: rc=%s in %.0fs" % (scenario, outcome.returncode, outcome.seconds))
    if outcome.returncode != 0:
        tail = "\n".join(outcome.output.splitlines()[-120:])
        pytest.fail(f"molecule scenario {scenario} failed (rc={outcome.returncode}):\n{tail}")
