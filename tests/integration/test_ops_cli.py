"""deploy.sh logs and deploy.sh run on a real server state (the engine's CLI with a deploy.json
pointing at the test app host): the live release's log (lines, since, follow), one-off commands
of the live release (a createsuperuser, its env and mounts, exit codes, removed afterwards,
recorded without env values, no secret on any command line)."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import (CLI_DRIVER, COLLECTIONS, docker_client, image, require_images, run_playbook,
                      write_deploy_config)

from ansible_collections.greenlight.deploy.plugins.module_utils._engine.swap import run_swap

pytestmark = pytest.mark.docker

DRIVER = CLI_DRIVER


def deploy_sh(config: Path, *argv: str, **popen: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(COLLECTIONS), str(config), *argv],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={"PATH": os.environ["PATH"], "SUDO_USER": "alice"}, **popen)


def run_cli(config: Path, *argv: str, timeout: float = 120) -> tuple[int, str, str]:
    proc = deploy_sh(config, *argv)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def one_offs(app: str) -> list:
    return docker_client().list_containers(labels={"greenlight.one-off-of": app})


@pytest.fixture
def live_v1(app_host, nginx):
    require_images("v1")
    run_swap(app_host.options(image=image("v1")))
    return write_deploy_config(app_host)


def test_logs_and_the_logs_and_run_playbooks(app_host, nginx, live_v1, tmp_path):
    code, out, err = run_cli(live_v1, "logs", "--lines", "50")
    assert code == 0, err
    assert "release v1" in err
    assert "Listening at: http://0.0.0.0:8000" in out + err  # gunicorn's start, on its stderr

    code, out, err = run_cli(live_v1, "logs", "--since", "2099-01-01T00:00")
    assert code == 0 and "Listening at" not in out + err

    code, out, err = run_cli(live_v1, "logs", "--since", "yesterday")
    assert code == 2 and "--since 'yesterday'" in err

    code, out, err = run_cli(live_v1, "logs", "--service", "worker")
    assert code == 1 and "release v1 of %s has no worker container" % app_host.app in err

    # --follow prints what the container writes from now on (gunicorn logs a SIGHUP).
    follow = deploy_sh(live_v1, "logs", "--follow", "--lines", "0")
    try:
        time.sleep(1.5)
        live = app_host.running_web()[0]["Id"]
        subprocess.run(["docker", "kill", "--signal", "HUP", live], check=True, capture_output=True)
        time.sleep(2)
    finally:
        follow.terminate()
        out, err = follow.communicate(timeout=20)
    assert "Handling signal: hup" in out + err
    assert "Listening at" not in out + err  # --lines 0: nothing from before

    # playbooks/logs.yml and playbooks/run.yml (through deploy.sh, as on a server).
    played = run_playbook("logs.yml", app_host, "logs_lines=20", "logs_dir=%s" % (tmp_path / "new"))
    assert played.returncode == 0, played.stdout + played.stderr
    assert "Listening at: http://0.0.0.0:8000" in (tmp_path / "new" / "localhost.log").read_text()
    assert "Listening at" in played.stdout
    # A server whose log cannot be read is reported and fails the play.
    played = run_playbook("logs.yml", app_host, "logs_service=worker")
    assert played.returncode != 0 and "cannot read the log" in played.stdout, played.stdout + played.stderr

    played = run_playbook("run.yml", app_host, "run_actor=ci-42", "cmd=python manage.py createsuperuser")
    assert played.returncode != 0 and "quoted inside the -e value" in played.stdout  # cmd would be "python"

    played = run_playbook("run.yml", app_host, "run_actor=ci-42",
                          "cmd='python manage.py createsuperuser --noinput --username ops --email ops@example.test'")
    assert played.returncode == 0, played.stdout + played.stderr
    assert "Superuser created successfully." in played.stdout, played.stdout

    played = run_playbook("run.yml", app_host, json.dumps({"cmd": "sh -c 'exit 4'"}))
    assert played.returncode != 0 and "exited 4" in played.stdout

    played = run_playbook("run.yml", app_host, "cmd='python manage.py migrate'", check=True)
    assert played.returncode == 0, played.stdout + played.stderr
    runs = [r for r in app_host.audit_lines() if r["action"] == "run"]
    assert [(r["command"][-2:], r["exit_code"], r["actor"]["by"]) for r in runs] == [
        (["--email", "ops@example.test"], 0, "ci-42"), (["-c", "exit 4"], 4, "run.yml")]
    assert one_offs(app_host.app) == []


def test_one_off_commands_of_the_live_release(app_host, nginx, live_v1):
    secret = next(line.split("=", 1)[1] for line in app_host.env_file.read_text().splitlines()
                  if line.startswith("DJANGO_SECRET_KEY="))
    code, out, err = run_cli(live_v1, "run", "--no-tty", "--", "python", "manage.py", "createsuperuser",
                             "--noinput", "--username", "admin", "--email", "admin@example.test")
    assert code == 0, err
    assert "Superuser created successfully." in out

    # Same database (mount), same env: the web container sees the user; no secret on a command line.
    check = ("from django.contrib.auth.models import User; import os; "
             "print('RESULT', User.objects.filter(is_superuser=True).values_list('username', flat=True)[0], "
             "len(os.environ['DJANGO_SECRET_KEY'])); import time; time.sleep(2)")
    proc = deploy_sh(live_v1, "run", "--command", "python manage.py shell -c %s" % json.dumps(check))
    seen_secret = []
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if secret.encode() in cmdline.read_bytes():
                    seen_secret.append(cmdline)
            except OSError:
                pass
        time.sleep(0.2)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.split("RESULT", 1)[1].split() == ["admin", str(len(secret))], out
    assert seen_secret == []

    code, out, err = run_cli(live_v1, "run", "--", "sh", "-c", "echo to-stderr >&2; exit 3")
    assert code == 3 and "to-stderr" in err and "exited 3" in err

    # With a terminal: the one-off container gets one (and the record says so).
    master, slave = pty.openpty()
    tty_run = subprocess.Popen([sys.executable, "-c", DRIVER, str(COLLECTIONS), str(live_v1), "run", "--", "sh", "-c",
                                "test -t 0 && test -t 1 && echo TTY-YES"], stdin=slave, stdout=slave,
                               stderr=subprocess.PIPE, env={"PATH": os.environ["PATH"], "SUDO_USER": "alice"})
    os.close(slave)
    err = tty_run.communicate(timeout=120)[1].decode()
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert tty_run.returncode == 0, err
    assert b"TTY-YES" in seen and "with a terminal" in err

    code, out, err = run_cli(live_v1, "run")
    assert code == 1 and "name the command" in err

    assert one_offs(app_host.app) == []
    log_text = app_host.releases_log.read_text()
    assert secret not in log_text
    runs = [r for r in app_host.audit_lines() if r["action"] == "run"]
    assert [(r["command"][:3], r["exit_code"], r["result"]) for r in runs] == [
        (["python", "manage.py", "createsuperuser"], 0, "ok"),
        (["python", "manage.py", "shell"], 0, "ok"),
        (["sh", "-c", "echo to-stderr >&2; exit 3"], 3, "failed"),
        (["sh", "-c", "test -t 0 && test -t 1 && echo TTY-YES"], 0, "ok")]
    assert [r["tty"] for r in runs] == [False, False, False, True]
    assert all(r["actor"]["user"] == "alice" and r["release"] == "v1" for r in runs)
    assert nginx.get("/health") == (200, "v1")  # the live release never noticed
