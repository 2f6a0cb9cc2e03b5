"""Unit tests of deploy.sh's front end (_swap_cli): root runs it through a sudo rule the deploy
user may call with any arguments, so nothing the caller passes or can write may choose the
configuration, a command or a file root acts on. No Docker needed: the tests stop before it."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from pathlib import Path

import pytest

from ansible_collections.greenlight.deploy.plugins.module_utils._engine import cli, cli_config, registry, state
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.cli_config import CliError


def _config(tmp_path: Path, marker: Path, docker_config: Path | None = None, name: str = "deploy.json") -> Path:
    """A deploy.json whose docker_command leaves `marker` behind when anything runs it."""
    helper = tmp_path / ("helper-" + name + ".sh")
    helper.write_text("#!/bin/sh\necho ran >> %s\n" % marker)
    helper.chmod(0o755)
    app = tmp_path / "app"
    app.mkdir(exist_ok=True)
    config = {
        "swap": {"app_name": "todo", "app_dir": str(app), "env_file": str(app / "todo.env"),
                 "upstream_file": str(tmp_path / "upstream.conf"), "docker_socket": str(tmp_path / "no.sock")},
        "image_repository": "registry.example.com/team/todo",
        "docker_command": str(helper),
    }
    if docker_config is not None:
        config["docker_config"] = str(docker_config)
    path = tmp_path / name
    path.write_text(json.dumps(config))
    path.chmod(0o644)
    return path


@pytest.mark.parametrize("argv", [
    ["--config", "{evil}", "deploy", "v1"],
    ["--config={evil}", "deploy", "v1"],
    ["--conf={evil}", "deploy", "v1"],
    ["--conf", "{evil}", "v1"],
    ["--co={evil}", "v1"],
    ["deploy", "v1", "--config={evil}"],
    ["v1", "--config", "{evil}"],
    ["status", "--conf={evil}"],
    ["rollback", "--config={evil}"],
    ["--", "--config={evil}"],
], ids=lambda argv: " ".join(argv))
def test_no_argument_chooses_the_configuration(tmp_path: Path, argv: list[str], capsys) -> None:
    """`sudo deploy.sh --config=<a file of the deploy user's> ...` must not make root run that
    file's docker_command: the configuration path is fixed by the root-owned deploy.sh."""
    marker = tmp_path / "evil-ran"
    docker_config = tmp_path / "docker"
    docker_config.mkdir(mode=0o700)
    good = _config(tmp_path, tmp_path / "good-ran", docker_config, name="deploy.json")
    evil = _config(tmp_path, marker, docker_config, name="evil.json")
    code = cli.main([a.format(evil=evil) for a in argv], config_path=str(good))
    assert code == cli_config.EXIT_USAGE
    assert not marker.exists(), "root ran the docker_command of a configuration named on the command line"
    assert not (tmp_path / "good-ran").exists()
    assert "usage" in capsys.readouterr().err.lower()


def test_main_needs_the_fixed_configuration_path(capsys) -> None:
    assert cli.main(["status"]) == cli_config.EXIT_USAGE
    assert "deploy.sh" in capsys.readouterr().err


def test_parsers_take_no_abbreviations() -> None:
    parser = cli.build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["deploy", "v1", "--no-p"])  # --no-pull written out only
    with pytest.raises(SystemExit):
        parser.parse_args(["status", "--la", "3"])


@pytest.mark.parametrize("how", ["group-writable config", "config of another user", "group-writable directory",
                                 "directory of another user", "symlink to a file of another user"])
def test_configuration_root_may_change_only(tmp_path: Path, how: str, monkeypatch) -> None:
    """deploy.json and every directory above it must be changeable by root (the caller) only."""
    directory = tmp_path / "install"
    directory.mkdir(mode=0o755)
    path = _config(directory, tmp_path / "ran")
    if how == "group-writable config":
        path.chmod(0o664)
    elif how == "group-writable directory":
        directory.chmod(0o775)
    elif how == "symlink to a file of another user":
        link = tmp_path / "link.json"
        link.symlink_to(path)
        path = link
    if how in ("config of another user", "directory of another user", "symlink to a file of another user"):
        # Everything here belongs to the user running the test: pretend it is someone else.
        monkeypatch.setattr(os, "geteuid", lambda: os.getuid() + 4242 if os.getuid() else 4242)
        if os.getuid() == 0:
            target = path.resolve() if how != "directory of another user" else directory
            os.chown(target, 4243, 4243)
    with pytest.raises(CliError, match="deploy.json|install|link.json") as failure:
        cli_config.load_config(str(path))
    assert "root" in str(failure.value)


def test_configuration_of_root_is_read(tmp_path: Path) -> None:
    directory = tmp_path / "install"
    directory.mkdir(mode=0o755)
    path = _config(directory, tmp_path / "ran")
    assert cli_config.load_config(str(path))["image_repository"] == "registry.example.com/team/todo"


@pytest.mark.parametrize("how", ["missing", "outside a root-owned directory", "group-writable directory",
                                 "world-writable config.json", "config.json of another user"])
def test_pull_refuses_a_docker_config_others_can_change(tmp_path: Path, how: str, monkeypatch) -> None:
    """A docker config the deploy user can write (credsStore/credHelpers, cli plugins, contexts)
    would make root run a helper of its choosing: the pull refuses it and runs nothing."""
    marker = tmp_path / "ran"
    docker_config = tmp_path / "docker"
    docker_config.mkdir(mode=0o700)
    (docker_config / "config.json").write_text('{"auths": {}}')
    (docker_config / "config.json").chmod(0o600)
    config = json.loads(_config(tmp_path, marker, docker_config).read_text())
    if how == "missing":
        del config["docker_config"]
    elif how == "group-writable directory":
        docker_config.chmod(0o770)
    elif how == "world-writable config.json":
        (docker_config / "config.json").chmod(0o666)
    elif how == "config.json of another user":
        monkeypatch.setattr(os, "geteuid", lambda: os.getuid() + 4242 if os.getuid() else 4242)
        if os.getuid() == 0:
            os.chown(docker_config / "config.json", 4243, 4243)
    elif how == "outside a root-owned directory":
        home = tmp_path / "home-deploy"
        home.mkdir()
        home.chmod(0o777)
        docker_config.rename(home / ".docker")
        config["docker_config"] = str(home / ".docker")
    with pytest.raises(CliError, match="docker_config|docker"):
        cli_config.pull("registry.example.com/team/todo:v1", config)
    assert not marker.exists()


def test_pull_runs_with_the_private_docker_config(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    docker_config = tmp_path / "docker"
    docker_config.mkdir(mode=0o700)
    config = json.loads(_config(tmp_path, marker, docker_config).read_text())
    cli_config.pull("registry.example.com/team/todo:v1", config)
    assert marker.read_text() == "ran\n"


def test_pull_runs_docker_with_a_fixed_environment(tmp_path: Path, monkeypatch) -> None:
    """Under sudo without secure_path the caller's PATH (and anything else) may reach root: the
    pull finds `docker` on a fixed PATH and passes the Docker client nothing of the caller's."""
    planted = tmp_path / "bin"
    planted.mkdir()
    marker = tmp_path / "planted-ran"
    (planted / "docker").write_text("#!/bin/sh\necho ran > %s\n" % marker)
    (planted / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", "%s:%s" % (planted, os.environ.get("PATH", "")))
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    monkeypatch.setenv("DOCKER_CONTEXT", "planted")
    docker_config = tmp_path / "docker"
    docker_config.mkdir(mode=0o700)
    config = json.loads(_config(tmp_path, tmp_path / "unused", docker_config).read_text())
    del config["docker_command"]
    seen: dict = {}

    def fake_run(argv, env=None, **kwargs):
        seen.update(argv=argv, env=env)
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(registry.subprocess, "run", fake_run)  # the one pull (registry.py)
    cli_config.pull("registry.example.com/team/todo:v1", config)
    assert seen["argv"][0] == "docker"
    env = seen["env"]
    assert env is not None and env["PATH"] == "/usr/sbin:/usr/bin:/sbin:/bin"
    assert env["DOCKER_CONFIG"] == str(docker_config) and env["HOME"] == pwd.getpwuid(os.geteuid()).pw_dir
    assert set(env) <= {"PATH", "HOME", "DOCKER_CONFIG", "LANG"}, sorted(env)
    assert not marker.exists()


def test_pull_environment_reaches_the_docker_client(tmp_path: Path, monkeypatch) -> None:
    dump = tmp_path / "env-seen"
    helper = tmp_path / "dump-env.sh"
    helper.write_text("#!/bin/sh\nenv > %s\n" % dump)
    helper.chmod(0o755)
    monkeypatch.setenv("GREENLIGHT_PLANTED", "1")
    docker_config = tmp_path / "docker"
    docker_config.mkdir(mode=0o700)
    config = json.loads(_config(tmp_path, tmp_path / "unused", docker_config).read_text())
    config["docker_command"] = str(helper)
    cli_config.pull("registry.example.com/team/todo:v1", config)
    seen = dict(line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
    assert seen["PATH"] == "/usr/sbin:/usr/bin:/sbin:/bin" and seen["DOCKER_CONFIG"] == str(docker_config)
    assert "GREENLIGHT_PLANTED" not in seen


def test_deploy_sh_and_mode_prepare_pull_through_one_function(tmp_path: Path, monkeypatch) -> None:
    """deploy.sh's pull is registry.pull (mode prepare's), streaming to stderr; a failure says the
    client's exit code and that nothing changed."""
    docker_config = tmp_path / "docker"
    docker_config.mkdir(mode=0o700)
    config = json.loads(_config(tmp_path, tmp_path / "unused", docker_config).read_text())
    seen: list = []

    def fake_pull(reference, docker_config, docker_command="docker", timeout=1800.0, output=None):
        seen.append((reference, docker_config, docker_command, output))
        raise registry.RegistryError("docker pull registry.example.com/team/todo:v1 exited 3", 3)

    monkeypatch.setattr(registry, "pull", fake_pull)
    with pytest.raises(CliError, match=r"docker pull registry.example.com/team/todo:v1 failed \(exit 3\); "
                                       r"nothing was changed, the live release keeps serving"):
        cli_config.pull("registry.example.com/team/todo:v1", config)
    assert seen == [("registry.example.com/team/todo:v1", str(docker_config), config["docker_command"],
                     cli_config.sys.stderr)]


def test_a_streamed_pull_shows_the_output_where_it_is_sent(tmp_path: Path) -> None:
    helper = tmp_path / "docker"
    helper.write_text("#!/bin/sh\necho \"pulled $*\"\nexit 0\n")
    helper.chmod(0o755)
    out = tmp_path / "out"
    with open(out, "w") as stream:
        registry.pull("todo:v1", None, str(helper), output=stream)
    assert out.read_text() == "pulled pull --quiet todo:v1\n"  # not a terminal: no layer progress


def _records_file(tmp_path: Path, records: list[dict]) -> Path:
    path = tmp_path / "releases.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_status_does_not_read_through_a_planted_symlink(tmp_path: Path) -> None:
    """A releases.jsonl or lock file replaced by a link to a root-only file is not read by root."""
    secret = tmp_path / "root-only.jsonl"
    secret.write_text(json.dumps({"result": "ok", "release": "SECRET"}) + "\n")
    link = tmp_path / "releases.jsonl"
    link.symlink_to(secret)
    with pytest.raises(CliError, match="symlink|link"):
        cli_config.read_records(str(link))
    lock = tmp_path / "deploy.lock"
    lock.symlink_to(secret)
    with pytest.raises(CliError, match="symlink|link"):
        cli_config.lock_holder(str(lock))


def test_restore_takes_only_a_snapshot_of_the_backup_directory(tmp_path: Path) -> None:
    """restore-database copies a snapshot named in releases.jsonl (which the deploy user can
    write) over the database as root: only a regular file of the backup directory qualifies."""
    backups = tmp_path / "backups"
    backups.mkdir()
    outside = tmp_path / "root-only.sqlite3"
    outside.write_bytes(b"SQLite format 3\x00")
    good = backups / "todo-20260101T000000000000Z-v1.sqlite3"
    good.write_bytes(b"SQLite format 3\x00")
    planted = backups / "todo-planted.sqlite3"
    planted.symlink_to(outside)
    assert cli_config.snapshot_in_backups(str(good), str(backups)) == str(good)
    for forged in (str(outside), str(backups / ".." / outside.name), str(planted)):
        with pytest.raises(CliError, match="backup"):
            cli_config.snapshot_in_backups(forged, str(backups))


@pytest.mark.parametrize("argument, expected", [
    ("v2", "registry.example.com/team/todo:v2"),
    ("sha256:" + "a" * 64, "registry.example.com/team/todo@sha256:" + "a" * 64),
    ("registry.example.com/team/todo:v3", "registry.example.com/team/todo:v3"),
    ("registry.example.com/team/todo@sha256:" + "b" * 64, "registry.example.com/team/todo@sha256:" + "b" * 64),
])
def test_image_reference_of_the_configured_repository(argument: str, expected: str) -> None:
    assert cli_config.image_reference(argument, "registry.example.com/team/todo") == expected


@pytest.mark.parametrize("argument", [
    "docker.io/attacker/evil:latest",
    "registry.example.com/team/todo-evil:v1",
    "registry.example.com/team/other:v1",
    "evil.example.com/team/todo:v1",
    "registry.example.com/team/todo/sub:v1",
])
def test_image_reference_from_elsewhere_is_refused(argument: str) -> None:
    """Root would run it with the app's env file and mounts: only the app's repository."""
    with pytest.raises(CliError, match="image_repository"):
        cli_config.image_reference(argument, "registry.example.com/team/todo")


# -- what root reads and prints for the deploy user ---------------------------------------------------
def test_lock_holder_refuses_a_hard_link_or_a_strangers_lock(tmp_path: Path) -> None:
    """The lock file is read like the engine opens it: no symbolic or hard link, owner checked."""
    app = tmp_path / "app"
    app.mkdir()
    other = tmp_path / "root-only.json"
    other.write_text(json.dumps({"pid": 1, "secret": "root's"}))
    os.link(other, app / "deploy.lock")
    with pytest.raises(CliError, match="hard links"):
        cli_config.lock_holder(str(app / "deploy.lock"))
    (app / "deploy.lock").unlink()
    if os.geteuid() != 0:
        pytest.fail("run as root: the owner rule is root's (the engine's user on a server)")
    (app / "deploy.lock").write_text("")
    os.chown(app / "deploy.lock", 10001, 10001)
    with pytest.raises(CliError, match="owned by uid 10001"):
        cli_config.lock_holder(str(app / "deploy.lock"))


def test_status_prints_no_terminal_escape_of_what_others_wrote(tmp_path: Path, monkeypatch, capsys) -> None:
    """releases.jsonl, the lock and --actor are the deploy user's (or the app's) text: printed with
    control characters escaped, so no escape sequence reaches the terminal of whoever reads it."""
    import argparse

    config = json.loads(_config(tmp_path, tmp_path / "unused").read_text())
    evil = "v9\x1b]0;owned\x07\x1b[2J\r\x9b31m\u202e"
    log = tmp_path / "app" / "releases.jsonl"
    log.write_text(json.dumps({"time": "t", "action": "deploy", "result": "ok", "release": evil,
                               "previous_release": evil, "actor": {"by": evil}}) + "\n")
    monkeypatch.setattr(state, "read_state", lambda docker, app, upstream_file: state.ServerState([], 8001))
    monkeypatch.setattr(state, "lock_holder", lambda path: {"pid": 7, "user": evil, "release": evil,
                                                                "action": "deploy", "phase": evil})
    assert cli.cmd_status(config, argparse.Namespace(json=False, last=5)) == 0
    out = capsys.readouterr().out
    for character in ("\x1b", "\x07", "\r", "\x9b", "\u202e"):
        assert character not in out, repr(character)
    assert "v9\\x1b]0;owned\\x07" in out
    cli_config._err("actor " + evil)
    assert "\x1b" not in capsys.readouterr().err
