"""Secrets an app prints never leave the server through the engine (issue 10): a failed
migration and a web container that dies before its health check put the last log lines into the
failure message; every env value in them is redacted, in the module's result (Ansible's output)
and in releases.jsonl, and so is pre_switch_output on success."""

from __future__ import annotations

import json
import secrets

import pytest

from conftest import image, require_images, run_module

pytestmark = pytest.mark.docker


def new_canary() -> str:
    return "CANARY" + secrets.token_hex(12)


def assert_nowhere(canary: str, result: dict, app_host) -> None:
    texts = {"module result": json.dumps(result), "releases.jsonl": app_host.releases_log.read_text()}
    for where, text in texts.items():
        assert text.count(canary) == 0, "the secret is in the %s" % where


def test_failed_migration_output_is_redacted(app_host, nginx):
    require_images("v1")
    canary = new_canary()
    app_host.write_env(CANARY_SECRET=canary)
    options = app_host.options(image=image("v1"),
                               pre_switch_commands=[["sh", "-c", "echo \"secret is $CANARY_SECRET\"; exit 1"]])
    result = run_module(options)
    assert result["_rc"] != 0 and result["failed_phase"] == "pre_switch", result.get("msg")
    assert "secret is [redacted CANARY_SECRET]" in result["msg"]  # control: the output is shown
    assert_nowhere(canary, result, app_host)


def test_web_container_that_prints_its_secret_and_dies_is_redacted(app_host, nginx):
    """gunicorn reads GUNICORN_CMD_ARGS and prints an unknown option before it exits."""
    require_images("v1")
    canary = new_canary()
    app_host.write_env(GUNICORN_CMD_ARGS="--%s" % canary)
    result = run_module(app_host.options(image=image("v1"), pre_switch_commands=[], health_timeout=20))
    assert result["_rc"] != 0 and result["failed_phase"] == "health", result.get("msg")
    assert "[redacted GUNICORN_CMD_ARGS]" in result["msg"], result["msg"]  # control
    assert_nowhere(canary, result, app_host)
    assert app_host.running_web() == []


def test_pre_switch_output_of_a_successful_deploy_is_redacted(app_host, nginx):
    require_images("v1")
    canary = new_canary()
    app_host.write_env(CANARY_SECRET=canary)
    options = app_host.options(
        image=image("v1"),
        pre_switch_commands=["python manage.py migrate --noinput", ["sh", "-c", "echo migrating with $CANARY_SECRET"]])
    result = run_module(options)
    assert result["_rc"] == 0, result.get("msg")
    assert result["pre_switch_output"][1] == "migrating with [redacted CANARY_SECRET]"  # control
    assert_nowhere(canary, result, app_host)
