"""Promise: malformed inputs fail in preflight, before anything changes on a server, with a
message that names the setting (never a secret value).

deploy.yml: preflight = the tasks before `Pull |` (the pull is the first thing that touches the
server's state), so the run must fail without reaching the pull and with changed=0.
Env file values are checked by the app_env role's preflight before it writes (setup.yml runs
that role); the run must fail with changed=0 and the env file untouched.
"""

from __future__ import annotations

import re
import typing as t
from pathlib import Path

import pytest

from server_under_test import ENV_FILE, PlaybookRun, Server, new_canary

pytestmark = pytest.mark.docker

DEPLOY_CASES: dict[str, tuple[dict[str, t.Any], str]] = {
    "image-tag-with-shell": ({"app_image_tag": "v2; rm -rf /"},
                             "app_image_tag v2; rm -rf / is neither an image tag nor a sha256:<64 hex> digest"),
    "image-digest-too-short": ({"app_image_tag": "sha256:abc123"},
                               "is neither an image tag nor a sha256:<64 hex> digest"),
    "image-repository": ({"app_image_tag": "v2", "greenlight_image_repository": "Registry.Example/Team/../todo"},
                         "is not a valid image name"),
    "port-out-of-range": ({"app_image_tag": "v2", "greenlight_web_ports": [8001, 70000]},
                          "greenlight_web_ports must be two different ports 1-65535"),
    "ports-not-a-pair": ({"app_image_tag": "v2", "greenlight_web_ports": [8001, 8001]},
                         "greenlight_web_ports must be two different ports 1-65535"),
    "container-port": ({"app_image_tag": "v2", "greenlight_container_port": "http"}, "greenlight_container_port"),
    "health-path": ({"app_image_tag": "v2", "deploy_script_health_path": "health"},
                    "deploy_script_health_path a URL path starting with '/'"),
    "app-name-dotdot": ({"app_image_tag": "v2", "greenlight_app_name": "../etc"},
                        "greenlight_app_name must be set (group_vars) to lower-case letters"),
    "app-name-space": ({"app_image_tag": "v2", "greenlight_app_name": "my app"},
                       "greenlight_app_name must be set (group_vars) to lower-case letters"),
}


@pytest.fixture(scope="module")
def deploy_runs(server: Server) -> dict[str, t.Any]:
    """Every deploy case, three at a time (each fails in seconds when preflight does its job)."""
    assert server.lock_is_free()
    before = {"live": server.live_release(), "containers": server.containers()}
    runs: dict[str, PlaybookRun] = {}
    cases = list(DEPLOY_CASES)
    while cases:
        batch, cases = cases[:3], cases[3:]
        started = {case: server.start_playbook("deploy.yml", extra_vars=DEPLOY_CASES[case][0]) for case in batch}
        runs.update({case: running.finish(timeout=300) for case, running in started.items()})
    after = {"live": server.live_release(), "containers": server.containers()}
    return {"runs": runs, "before": before, "after": after}


@pytest.mark.parametrize("case", list(DEPLOY_CASES))
def test_malformed_deploy_input_fails_in_preflight(settled: Server, deploy_runs: dict[str, t.Any], case: str) -> None:
    run = deploy_runs["runs"][case]
    message = DEPLOY_CASES[case][1]
    assert run.rc != 0, run.output[-3000:]
    assert message in run.flat(), run.output[-3000:]
    # (The tasks live in the role greenlight.deploy.release: a header may carry the role's name.)
    assert re.search(r"TASK \[(?:greenlight\.deploy\.release : )?Pull \|", run.output) is None, \
        "the run got past preflight:\n" + run.output[-3000:]
    assert "Preflight |" in (run.failed_task() or "") or "Validating arguments" in (run.failed_task() or ""), \
        run.failed_task()
    for host, counts in run.recap().items():
        assert counts["changed"] == 0, (host, counts)
    assert deploy_runs["after"] == deploy_runs["before"], "a malformed deploy changed the server"


# docker --env-file passes quotes on literally, so a value wrapped in quotes (as in a shell or a
# docker compose .env file) would reach the app with its quotes: "value" is a different secret than
# value. A line break is proven by molecule/app_env/tests/test_secret_not_logged.py
# (test_multi_line_secret_is_rejected_by_name_without_its_value).
QUOTED_CASES = {"double-quoted": '"%s"', "single-quoted": "'%s'"}
ROLE_ONLY = str(Path(__file__).with_name("role_only.yml"))
APP_ENV = {"reliability_roles": ["greenlight.deploy.app_env"]}


@pytest.mark.parametrize("case", list(QUOTED_CASES))
def test_env_value_wrapped_in_quotes_fails_in_preflight(settled: Server, case: str) -> None:
    server = settled
    canary = new_canary("quoted")
    env_before = server.file_digest(ENV_FILE)
    run = server.playbook(ROLE_ONLY, extra_vars=dict(APP_ENV, vault_email_host_password=QUOTED_CASES[case] % canary))
    try:
        assert run.rc != 0, "a value wrapped in quotes was written to the env file:\n" + run.output[-2000:]
        flat = run.flat()
        assert "greenlight.deploy.app_env" in flat and "EMAIL_HOST_PASSWORD" in flat and "quote" in flat, \
            run.output[-3000:]
        assert "greenlight.deploy.app_env : Preflight |" in (run.failed_task() or ""), run.failed_task()
        for host, counts in run.recap().items():
            assert counts["changed"] == 0, (host, counts)
        assert server.file_digest(ENV_FILE) == env_before
    finally:
        if server.file_digest(ENV_FILE) != env_before:  # put the suite's env file back
            restore = server.playbook(ROLE_ONLY, extra_vars=APP_ENV)
            assert restore.rc == 0, restore.output[-2000:]
    assert canary not in run.output, "the rejected value was printed"


def test_quotes_inside_an_env_value_reach_the_app_verbatim(settled: Server) -> None:
    """The counterpart: a secret with quotes and a $ inside (the suite's EMAIL_HOST_PASSWORD) is
    written and passed to the container exactly, with nothing expanded or stripped."""
    server = settled
    [web] = server.running_web()
    seen = server.sh("docker exec %s python -c 'import os; print(os.environ[\"EMAIL_HOST_PASSWORD\"])'"
                     % web["id"]).stdout.rstrip("\n")
    assert seen == server.email_password
