"""The two long static checks (ansible-lint, ansible-test sanity: a minute of one core each)
start in the background once collection is done, one after the other with the other slow
setups (tests/prewarm.py); their tests take the results. GREENLIGHT_TEST_SERIAL=1 runs them in
their tests instead."""
from __future__ import annotations

import pathlib

import pytest

import prewarm

HERE = pathlib.Path(__file__).resolve().parent
STARTED_IN_BACKGROUND = ("test_ansible_lint_production_profile", "test_ansible_test_sanity_passes_on_the_shipped_collection")


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly or not prewarm.enabled():
        return
    for index, item in enumerate(session.items):
        if getattr(item, "originalname", None) in STARTED_IN_BACKGROUND and item.path.parent == HERE:
            item.module.start_in_background(session.config, index)
