"""Shared pytest fixtures for the greenlight.deploy test suite."""
from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from gltest import REPO, docker_answers  # noqa: E402,F401  (docker_answers: also imported from here)


@pytest.fixture(scope="session")
def repo() -> pathlib.Path:
    return REPO


@pytest.fixture(scope="session")
def docker_available() -> None:
    if not docker_answers():
        pytest.fail("no Docker engine answers: run `make testbed` (make test does it first)")


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the selected Molecule scenarios in the background (tests/molecule_runner.py), and the
    fixture setups that the conftest.py files of subdirectories registered (tests/prewarm.py)."""
    import prewarm
    from molecule_runner import BackgroundScenarios, background_enabled

    prewarm.launch()

    scenarios = [item.callspec.params["scenario"] for item in session.items
                 if getattr(item, "originalname", "") == "test_molecule_scenario" and hasattr(item, "callspec")]
    if not scenarios or not background_enabled() or session.config.option.collectonly:
        return
    if not docker_answers():
        return  # each scenario's test fails on docker_available
    session.config._greenlight_molecule = BackgroundScenarios(scenarios).start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    background = getattr(session.config, "_greenlight_molecule", None)
    if background is not None:
        background.stop()
    import prewarm  # tests/prewarm.py: setups started in the background that no fixture took

    prewarm.stop_all()


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    """Molecule scenario tests last: they only wait for the background runs, which overlap
    everything before them."""
    items.sort(key=lambda item: getattr(item, "originalname", "") == "test_molecule_scenario")
