"""Promises about secrets (canaries: the vault's DJANGO_SECRET_KEY, rotated per run, an
EMAIL_HOST_PASSWORD, and the test registry's random password with docker's base64 form of it):

- absent from ansible-playbook's output at -v .. -vvvv, with --diff, with --check --diff, from
  the ANSIBLE_LOG_PATH file and from the JSON callback's output;
- absent from every process command line on the server (and on the controller) while setup.yml
  logs in to the registry and while deploy.yml deploys;
- absent from `docker history`, image and container labels on the server (and from the audit
  log and the lock file);
- the env file and root's docker config (the registry login) are 0600 after every playbook of the suite.

Controls prove each check can fail: the canary is in the env file and in the container's
environment, the samplers saw the `docker login` and module processes, the log file has the run.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest

from server_under_test import DOCKER_CONFIG, ENV_FILE, LOCK_FILE, RELEASES_LOG, CmdlineSampler, Server, new_canary

pytestmark = pytest.mark.docker

DOCKER_LOGIN = "docker login --username greenlight --password-stdin"
ROLE_ONLY = str(Path(__file__).with_name("role_only.yml"))
APP_ENV, REGISTRY_LOGIN = "greenlight.deploy.app_env", "greenlight.deploy.registry_login"


def assert_no_secret(server: Server, text: str, where: str) -> None:
    leaked = server.leaked(text)
    assert not leaked, "%d secret(s) in %s (first chars: %s)" % (len(leaked), where, [v[:10] for v in leaked])


@dataclasses.dataclass
class SecretRuns:
    """The evidence the output and process-list tests look at, gathered once (the runs are slow)."""

    outputs: list[tuple[str, str]]
    login_samples: CmdlineSampler
    deploy_samples: CmdlineSampler


@pytest.fixture(scope="module")
def secret_runs(server: Server, tmp_path_factory) -> SecretRuns:
    """Four runs that together cover -v, -vv, -vvv and -vvvv, --diff, --check --diff,
    ANSIBLE_LOG_PATH and the JSON callback, each asserting its own control."""
    assert server.live_release() in ("v1", "v2") and server.lock_is_free()
    outputs = []

    # 1. setup.yml -vvvv --diff + ANSIBLE_LOG_PATH, a rotated secret (the env file is rewritten)
    #    and a real registry login (config.json removed), with both process samplers running.
    server.write_vault(new_canary("key"))
    log_path = tmp_path_factory.mktemp("ansible-log") / "ansible.log"
    server.sh("rm -f %s" % DOCKER_CONFIG)
    login_samples = CmdlineSampler(server.name)
    try:
        time.sleep(0.3)
        run = server.playbook("setup.yml", "-vvvv", "--diff", env={"ANSIBLE_LOG_PATH": str(log_path)})
    finally:
        login_samples.stop()
    assert run.rc == 0, run.output[-3000:]
    assert "DJANGO_SECRET_KEY=%s" % server.secret_key in server.sh("cat %s" % ENV_FILE).stdout  # control
    assert "Env file | Write the env file" in log_path.read_text()  # control: the log has the run
    for _attempt in range(2):  # docker login lives ~0.1 s: log in again until the sampler saw it
        if login_samples.saw(DOCKER_LOGIN):
            break
        server.sh("rm -f %s" % DOCKER_CONFIG)
        again = CmdlineSampler(server.name)
        try:
            time.sleep(0.3)
            relogin = server.playbook(ROLE_ONLY, "-vvvv", extra_vars={"reliability_roles": [REGISTRY_LOGIN]})
        finally:
            again.stop()
        assert relogin.rc == 0, relogin.output[-3000:]
        outputs.append(("registry_login -vvvv", relogin.output))
        login_samples.container += again.container
        login_samples.controller += again.controller
    outputs += [("setup.yml -vvvv --diff", run.output), ("the ANSIBLE_LOG_PATH file", log_path.read_text())]

    # 2. deploy.yml -vvv --diff: a swap to the other release, with both process samplers running.
    deploy_samples = CmdlineSampler(server.name)
    try:
        time.sleep(0.3)
        run = server.deploy(server.other_release(), "-vvv", "--diff")
    finally:
        deploy_samples.stop()
    assert run.rc == 0, run.output[-3000:]
    outputs.append(("deploy.yml -vvv --diff", run.output))

    # 3. --check --diff -v with the JSON callback and a secret that would change the env file: the
    #    two roles of setup.yml that handle secrets (app_env, registry_login), alone to save time
    #    (run 1 had every role of setup.yml at -vvvv --diff).
    pending = new_canary("key")
    server.canaries_used.append(pending)
    run = server.playbook(ROLE_ONLY, "--check", "--diff", "-v",
                          extra_vars={"vault_django_secret_key": pending, "reliability_roles": [APP_ENV, REGISTRY_LOGIN]},
                          env={"ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json", "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1"})
    assert run.rc == 0, run.output[-3000:]
    # control: this is the JSON callback's output (warnings may come first), and it saw the change
    result, _end = json.JSONDecoder().raw_decode(run.output[run.output.index("\n{\n") + 1:])
    assert result["stats"][server.name]["changed"] >= 1, "check mode did not see the new secret"
    assert "DJANGO_SECRET_KEY=%s" % server.secret_key in server.sh("cat %s" % ENV_FILE).stdout  # check changed nothing
    outputs.append(("app_env + registry_login --check --diff -v (JSON callback)", run.output))

    # 4. deploy.yml --check --diff -vv.
    run = server.deploy(server.other_release(), "--check", "--diff", "-vv")
    assert run.rc == 0, run.output[-3000:]
    assert "WOULD-DEPLOY" in run.output  # control: check mode predicted a swap
    outputs.append(("deploy.yml --check --diff -vv", run.output))
    return SecretRuns(outputs, login_samples, deploy_samples)


def test_secrets_absent_from_output_at_every_verbosity_and_mode(settled: Server, secret_runs: SecretRuns) -> None:
    for where, text in secret_runs.outputs:
        assert_no_secret(settled, text, where)


def test_secrets_absent_from_process_command_lines_during_login_and_deploy(settled: Server,
                                                                           secret_runs: SecretRuns) -> None:
    server = settled
    login, deploy = secret_runs.login_samples, secret_runs.deploy_samples
    # controls: the samplers caught the short-lived processes that would carry a secret
    assert login.saw(DOCKER_LOGIN), "the sampler never saw the docker login process: sampling too slow"
    assert deploy.saw("docker pull") and deploy.saw("manage.py migrate"), "sampler missed the deploy"
    for name, sampler in (("setup.yml", login), ("deploy.yml", deploy)):
        assert_no_secret(server, "\n".join(sampler.container), "the server's process list during %s" % name)
        assert_no_secret(server, "\n".join(sampler.controller), "the controller's process list during %s" % name)


def test_secrets_absent_from_image_history_and_labels(settled: Server) -> None:
    server = settled
    [web] = server.running_web()
    environment = server.sh("docker inspect -f '{{json .Config.Env}}' %s" % web["id"]).stdout
    assert "DJANGO_SECRET_KEY=%s" % server.secret_key in environment  # control: the app has the secret
    images = set(server.sh("docker ps -a --filter label=greenlight.app=todo --format '{{.Image}}'").stdout.split())
    containers = [c["id"] for c in server.containers()]
    assert images and containers
    for image in sorted(images):
        history = server.sh("docker history --no-trunc --format '{{.CreatedBy}}' %s" % image).stdout
        assert_no_secret(server, history, "docker history of %s" % image)
        labels = server.sh("docker image inspect -f '{{json .Config.Labels}}' %s" % image).stdout
        assert_no_secret(server, labels, "labels of image %s" % image)
    for container in containers:
        labels = server.sh("docker inspect -f '{{json .Config.Labels}}' %s" % container).stdout
        assert "greenlight.release" in labels  # control
        assert_no_secret(server, labels, "labels of container %s" % container)
    for path in (RELEASES_LOG, LOCK_FILE):
        assert_no_secret(server, server.sh("cat %s" % path).stdout, path)


def test_env_file_and_docker_config_stay_0600_after_every_playbook(settled: Server) -> None:
    """Runs last (conftest.py): rollback.yml once more, then every playbook run of the suite
    (setup, deploy, rollback; changed, unchanged, check mode and failed runs) must have left both
    files 0600 and owned by the deploy user."""
    server = settled
    run = server.playbook("rollback.yml")
    assert run.rc == 0, run.output[-3000:]
    ran = {check["run"].split()[0] for check in server.mode_checks}
    assert {"setup.yml", "deploy.yml", "rollback.yml"} <= ran, ran
    expected = ["%s 600 deploy" % ENV_FILE, "%s 600 root" % DOCKER_CONFIG]
    wrong = [check for check in server.mode_checks if check["stat"] != expected]
    assert wrong == [], wrong
