"""deploy.sh run's one-off container on its own (a fake Docker): never as root with the app's data
mounted, no privilege gain inside, and a killed or disconnected run still removes its container
and writes its record."""

from __future__ import annotations

import json
import os
import signal
import stat
import typing as t
from pathlib import Path

import pytest

from ansible_collections.greenlight.deploy.plugins.module_utils._engine import ops
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.options import options_from_dict

from engine_fakes import options


class OneOffDocker:
    def __init__(self, user: str) -> None:
        self.live = {"Image": "sha256:" + "11" * 32,
                     "Config": {"User": user, "Env": ["DJANGO_SECRET_KEY=s3cret-value"], "WorkingDir": "/app"},
                     "HostConfig": {"Binds": [], "NetworkMode": "default"}}
        self.created: dict[str, dict] = {}
        self.removed: list[str] = []

    def inspect_container(self, container_id: str) -> dict[str, t.Any]:
        if container_id == "live":
            return self.live
        return {"State": {"Running": False, "ExitCode": 0}}

    def create_container(self, name: str, config: dict) -> str:
        self.created[name] = config
        return "one-off-1"

    def remove_container(self, container_id: str, force: bool = True) -> None:
        self.removed.append(container_id)

    def stop_container(self, container_id: str, grace: float) -> None:
        pass


@pytest.fixture
def opts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "app").mkdir()
    values = options_from_dict(options(tmp_path))
    monkeypatch.setattr(ops, "target_container", lambda *_a, **_k: {"Id": "live", "Labels": {"greenlight.release": "v1"}})
    return values


def records(values) -> list[dict]:
    path = Path(values.releases_log)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("user", ["", "0", "root", "root:root", "0:0"])
def test_an_image_running_as_root_is_refused_before_any_container(opts, user, tmp_path):
    docker = OneOffDocker(user)
    with pytest.raises(ops.OpsError, match="runs as root.*non-root USER"):
        ops.run_one_off(docker, opts, ["sh", "-c", "id"], tty=False, interactive=False, docker_command="true")
    assert docker.created == {} and records(opts) == []


def test_a_one_off_runs_as_the_image_user_without_privilege_gain(opts):
    docker = OneOffDocker("10001:10001")
    record = ops.run_one_off(docker, opts, ["true"], tty=False, interactive=False, docker_command="true")
    [config] = docker.created.values()
    assert config["User"] == "10001:10001"
    assert config["HostConfig"]["SecurityOpt"] == ["no-new-privileges"]
    assert record["result"] == "ok" and docker.removed == ["one-off-1"]


@pytest.mark.parametrize("signame", ["SIGHUP", "SIGTERM"])
def test_a_run_ended_by_a_signal_removes_its_container_and_is_recorded(opts, tmp_path, signame):
    # `docker start --attach` stand-in: the session ends (the caller gets the signal) mid-command.
    client = tmp_path / "docker"
    client.write_text("#!/bin/sh\nkill -%s $PPID\nsleep 30\n" % signame[3:])
    client.chmod(client.stat().st_mode | stat.S_IXUSR)
    docker = OneOffDocker("10001")
    before = {name: signal.getsignal(getattr(signal, name)) for name in ("SIGHUP", "SIGTERM")}
    with pytest.raises(KeyboardInterrupt):
        ops.run_one_off(docker, opts, ["sleep", "60"], tty=False, interactive=False, docker_command=str(client))
    assert docker.removed == ["one-off-1"]
    [record] = records(opts)
    assert record["action"] == "run" and record["result"] == "interrupted" and record["exit_code"] == 130
    assert "s3cret-value" not in json.dumps(record)
    after = {name: signal.getsignal(getattr(signal, name)) for name in ("SIGHUP", "SIGTERM")}
    assert after == before  # the handlers are put back


def test_a_full_disk_at_the_record_keeps_the_commands_result(opts, monkeypatch):
    def full(_path, _record):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(ops, "append_jsonl", full)
    said: list[str] = []
    record = ops.run_one_off(OneOffDocker("10001"), opts, ["true"], tty=False, interactive=False,
                             docker_command="true", log=said.append)
    assert record["exit_code"] == 0 and any("No space left" in line for line in said)
    assert not os.path.exists(opts.releases_log)
