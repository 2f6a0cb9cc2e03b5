"""The registry token never shows: not in ansible-playbook output at -vvvv --diff, not in any
process's command line on the server or on the controller while the role runs, and a wrong token
fails with a message that names registry and user and keeps the stored credentials.

The test registry's password is random per machine (.testbed/registry-password): it is the canary.
Control tests prove the samplers and the grep do see what they look for.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import pathlib
import secrets
import subprocess
import sys
import time

import pytest

SCENARIO = pathlib.Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])
PROJECT = pathlib.Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
INSTANCE = "gl-registry-login"
CONFIG = "/root/.docker/config.json"

sys.path.insert(0, str(PROJECT / "tests"))
from cmdline_sampler import CmdlineSampler  # noqa: E402  (tests/cmdline_sampler.py, shared with tests/reliability)


def password() -> str:
    return (PROJECT / ".testbed" / "registry-password").read_text().strip()


def forbidden() -> list[str]:
    """The token in the forms it could leak: plain, and as docker's base64 user:token."""
    token = password()
    return [token, base64.b64encode(f"greenlight:{token}".encode()).decode()]


def converge(tmp_path: pathlib.Path, *args: str, **extra_vars: str) -> subprocess.Popen[str]:
    """Start the converge; extra vars go through a file, never argv."""
    argv = ["ansible-playbook", str(SCENARIO / "converge.yml"), "-i", INVENTORY, *args]
    if extra_vars:
        vars_file = tmp_path / f"vars-{secrets.token_hex(4)}.json"
        vars_file.write_text(json.dumps(extra_vars))
        argv += ["-e", f"@{vars_file}"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, ANSIBLE_NOCOLOR="1"))


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=300)
    return proc.returncode, out


def config_digest(host) -> str:
    return hashlib.sha256(host.file(CONFIG).content_string.encode()).hexdigest()


def test_control_sampler_sees_command_lines(host) -> None:
    """If this fails, the /proc test below proves nothing."""
    marker_inside, marker_outside = f"CONTROL-{secrets.token_hex(8)}", f"CONTROL-{secrets.token_hex(8)}"
    sampler = CmdlineSampler(INSTANCE)
    try:
        time.sleep(0.3)
        host.run(f"sh -c 'sleep 0.5' {marker_inside}")
        outside = subprocess.Popen(["sh", "-c", "sleep 0.5", marker_outside])
        outside.wait()
        time.sleep(0.2)
    finally:
        sampler.stop()
    assert any(marker_inside in s for s in sampler.container)
    assert any(marker_outside in s for s in sampler.controller)
    assert len(sampler.container) > 10 and len(sampler.controller) > 10


def test_control_output_grep_finds_a_printed_token(tmp_path) -> None:
    proc = subprocess.run(
        ["ansible", "all", "-i", INVENTORY, "-m", "ansible.builtin.debug", "-a", "var=registry_login_password"],
        capture_output=True, text=True, check=False, env=dict(os.environ, ANSIBLE_NOCOLOR="1"),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert password() in proc.stdout


def test_token_never_on_a_command_line_nor_in_output(host, tmp_path) -> None:
    """Forces a real login (config.json removed) while both samplers watch; up to three tries to
    catch the short-lived `docker login` process itself."""
    for attempt in range(3):
        host.run(f"rm -f {CONFIG}")
        sampler = CmdlineSampler(INSTANCE)
        try:
            time.sleep(0.3)
            rc, out = finish(converge(tmp_path, "-vvvv", "--diff"))
        finally:
            sampler.stop()
        assert rc == 0, out[-3000:]
        for secret in forbidden():
            assert secret not in out, "token in ansible-playbook output"
            assert not sampler.saw(secret), "token in a process command line"
        assert host.file(CONFIG).mode == 0o600
        if sampler.saw("docker login --username greenlight --password-stdin"):
            break
    else:
        pytest.fail("the samplers never saw the docker login process: sampling is too slow to prove anything")


def test_wrong_token_fails_naming_registry_and_user_and_keeps_config(host, tmp_path) -> None:
    wrong = f"CANARY-{secrets.token_hex(12)}"
    before = config_digest(host)
    rc, out = finish(converge(tmp_path, "-vvvv", "--diff", vault_registry_token=wrong))
    assert rc != 0
    flat = " ".join(out.split())
    assert "docker login to registry.greenlight.test:5000 as greenlight failed for user root" in flat
    assert wrong not in out
    assert base64.b64encode(f"greenlight:{wrong}".encode()).decode() not in out
    for secret in forbidden():
        assert secret not in out
    assert config_digest(host) == before, "a rejected login must leave config.json as it was"


def test_same_token_again_changes_nothing(tmp_path) -> None:
    rc, out = finish(converge(tmp_path))
    assert rc == 0, out[-3000:]
    assert "changed=0" in out


def test_check_mode_predicts_a_login_and_changes_nothing(host, tmp_path) -> None:
    other = f"CANARY-{secrets.token_hex(12)}"
    before = config_digest(host)
    rc, out = finish(converge(tmp_path, "--check", "--diff", "-vvvv", vault_registry_token=other))
    assert rc == 0, out[-3000:]
    assert "Would log root in to registry.greenlight.test:5000 as greenlight" in " ".join(out.split())
    assert other not in out and password() not in out
    assert config_digest(host) == before
