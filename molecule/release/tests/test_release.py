"""What greenlight.deploy.release leaves on a server after converge (setup.yml, deploy.yml v1, then
v2), the idempotence run and side_effect (rollback.yml to v1, deploy.yml v2 again): v2 live behind
nginx, v1 kept stopped for the next rollback, one audit record per swap with its actor and without
a secret, the env file private, the deploy lock free; no request failed under load during the
rollback and the deploy of side_effect; the engine imports on the server's own python3 (3.11 on
Debian 12, 3.13 on Debian 13) without a deprecation warning. Every test runs on both servers."""
from __future__ import annotations

import json
import os
import pathlib
import shlex
import time

import yaml
from ansible.parsing.vault import VaultLib, VaultSecret

APP_DIR = "/opt/todo"
SERVER_NAME = "staging.greenlight.test"
UPSTREAM_FILE = "/etc/nginx/greenlight/todo-upstream.conf"
SCENARIO = pathlib.Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])
PROJECT = pathlib.Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
UNDER_LOAD = pathlib.Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "under-load" / "summary.json"
ENGINE_ARCHIVE = "/usr/local/lib/greenlight/todo/greenlight.zip"


def vault_values() -> dict[str, str]:
    """The secret values of group_vars/staging/vault.yml, decrypted with the scenario's test password."""
    password = (SCENARIO / "vault-password.TEST-ONLY.txt").read_bytes().strip()
    vault = VaultLib([("staging", VaultSecret(password))])
    plain = vault.decrypt((SCENARIO / "inventory/group_vars/staging/vault.yml").read_bytes())
    values = yaml.safe_load(plain)
    # Names only in the assertion: a failure must not print the values.
    well_formed = bool(values) and all(isinstance(v, str) and len(v) >= 16 for v in values.values())
    assert well_formed, sorted(values)
    return values


def web_containers(host, *filters: str) -> list[dict]:
    """docker inspect of the app's web containers (running or not) matching the extra label filters."""
    args = " ".join(f"--filter label={f}" for f in ("greenlight.app=todo", "greenlight.service=web", *filters))
    ids = host.check_output(f"docker ps -aq {args}").split()
    return json.loads(host.check_output("docker inspect " + " ".join(ids))) if ids else []


def records(host) -> list[dict]:
    return [json.loads(line) for line in host.file(f"{APP_DIR}/releases.jsonl").content_string.splitlines() if line]


def test_v2_runs_with_its_labels(host) -> None:
    wait_for_background_stop(host)
    running = [c for c in web_containers(host) if c["State"]["Running"]]
    assert len(running) == 1, [c["Name"] for c in running]
    labels = running[0]["Config"]["Labels"]
    assert labels["greenlight.app"] == "todo" and labels["greenlight.service"] == "web"
    assert labels["greenlight.release"] == "v2"
    assert labels["greenlight.image"] == "registry.greenlight.test:5000/greenlight/todo:v2"
    assert labels["greenlight.port"] in ("8001", "8002") and labels["greenlight.config-hash"]


def test_nginx_serves_v2_for_the_server_name(host) -> None:
    assert host.service("nginx").is_running
    out = host.check_output(f"curl -s -i --max-time 10 -H 'Host: {SERVER_NAME}' http://127.0.0.1/")
    head = out.replace("\r\n", "\n").partition("\n\n")[0].splitlines()
    assert head[0].split()[1] == "200", head
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}
    assert headers.get("x-release") == "v2", headers


def test_upstream_names_the_port_of_v2(host) -> None:
    (v2,) = [c for c in web_containers(host, "greenlight.release=v2") if c["State"]["Running"]]
    port = v2["Config"]["Labels"]["greenlight.port"]
    assert host.file(UPSTREAM_FILE).content_string.strip() == f"server 127.0.0.1:{port};"
    published = v2["HostConfig"]["PortBindings"]["8000/tcp"][0]
    assert (published["HostIp"], published["HostPort"]) == ("127.0.0.1", port)


def test_v1_is_kept_stopped_for_rollback(host) -> None:
    wait_for_background_stop(host)
    v1 = web_containers(host, "greenlight.release=v1")
    assert len(v1) == 1
    assert not v1[0]["State"]["Running"] and v1[0]["State"]["Status"] == "exited"
    assert v1[0]["Config"]["Labels"]["greenlight.image"] == "registry.greenlight.test:5000/greenlight/todo:v1"
    status = json.loads(host.check_output(f"{APP_DIR}/deploy.sh status --json"))
    assert status["live"]["release"] == "v2"
    assert "v1" in [kept["release"] for kept in status["kept"]]


def test_releases_log_has_one_record_per_swap_in_order(host) -> None:
    """converge: deploy v1, deploy v2; idempotence: nothing; side_effect: rollback to v1, deploy v2."""
    swaps = [(r["action"], r["release"], r.get("previous_release"), r["result"]) for r in records(host)]
    assert swaps == [("deploy", "v1", None, "ok"), ("deploy", "v2", "v1", "ok"),
                     ("rollback", "v1", "v2", "ok"), ("deploy", "v2", "v1", "ok")]
    actors = [r["actor"]["by"] for r in records(host)]
    assert [a.split(" run by ")[0] for a in actors] == ["deploy.yml", "deploy.yml", "rollback.yml", "deploy.yml"]
    assert all(r["actor"]["user"] == "root" and r["actor"]["host"] for r in records(host))


def test_releases_log_holds_no_secret_value(host) -> None:
    log = host.file(f"{APP_DIR}/releases.jsonl")
    assert (log.user, log.group, log.mode) == ("root", "deploy", 0o640)
    content = log.content_string
    secrets = dict(vault_values(), registry_password=(PROJECT / ".testbed/registry-password").read_text().strip())
    # Names only in the assertion: a failure must not print the values.
    leaked = [name for name, value in secrets.items() if value in content]
    assert leaked == []


def test_env_file_holds_the_vault_values_and_is_private(host) -> None:
    env_file = host.file(f"{APP_DIR}/todo.env")
    assert (env_file.user, env_file.group, env_file.mode) == ("deploy", "deploy", 0o600)
    variables = dict(line.split("=", 1) for line in env_file.content_string.splitlines()
                     if line and not line.startswith("#"))
    vault = vault_values()
    # Names only in the assertion: a failure must not print the values.
    differ = [name for name, vault_name in (("DJANGO_SECRET_KEY", "vault_django_secret_key"),
                                            ("EMAIL_HOST_PASSWORD", "vault_email_host_password"))
              if variables.get(name) != vault[vault_name]]
    assert differ == []


def wait_for_background_stop(host) -> None:
    """The last deploy may still be stopping the old release in the background (it holds the lock
    in phase stop_old, or has just written "released"): wait for that, never for anything else."""
    deadline = time.monotonic() + 30
    while host.run(f"flock -n {APP_DIR}/deploy.lock true").rc != 0 and time.monotonic() < deadline:
        holder = json.loads(host.check_output(f"{APP_DIR}/deploy.sh status --json --last 0"))["lock"]
        assert holder is None or holder["phase"] in ("stop_old", "done"), holder
        time.sleep(0.5)


def test_deploy_lock_is_free(host) -> None:
    lock = host.file(f"{APP_DIR}/deploy.lock")
    assert lock.is_file and lock.user == "root"
    wait_for_background_stop(host)
    assert host.run(f"flock -n {APP_DIR}/deploy.lock true").rc == 0
    assert json.loads(host.check_output(f"{APP_DIR}/deploy.sh status --json"))["lock"] is None


def test_no_request_failed_under_load_during_the_rollback_and_the_deploy(host) -> None:
    """side_effect.yml: under_load.py sent requests through this server's nginx from before the
    rollback to v1 until after the deploy of v2."""
    summary = json.loads(UNDER_LOAD.read_text())[host.backend.get_hostname()]
    assert summary["failed"] == 0, summary
    assert summary["requests"] >= 50, summary
    order = summary["releases_in_order"]
    assert order[0] == "v2" and "v1" in order and order[-1] == "v2", summary


def test_the_engine_imports_on_the_servers_python_without_a_deprecation_warning(host) -> None:
    """deploy.sh runs the engine with the server's /usr/bin/python3; every module of it imports
    with warnings turned into errors."""
    script = ("import importlib, pkgutil, sys; sys.path.insert(0, sys.argv[1]); import greenlight; "
              "names = [m.name for m in pkgutil.iter_modules(greenlight.__path__)]; "
              "[importlib.import_module('greenlight.' + n) for n in names]; print(sys.version_info[:2], len(names))")
    result = host.run("/usr/bin/python3 -I -W error -c %s %s" % (shlex.quote(script), ENGINE_ARCHIVE))
    assert result.rc == 0, result.stderr
    assert int(result.stdout.split()[-1]) >= 20, result.stdout
