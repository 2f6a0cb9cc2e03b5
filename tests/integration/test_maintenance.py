"""Maintenance mode on a real nginx with the proxy role's own site template (rendered here with the
role's values) and the engine's switch (ops.set_maintenance, what deploy.sh maintenance runs):
switched on and off under load, every answer is 200 from the release or 503 with the maintenance
page and Retry-After, never a connection error or a 502; a deploy during maintenance succeeds
(the engine's check through nginx gets through) and leaves maintenance on."""

from __future__ import annotations

import http.client
import subprocess
import threading
import time
from pathlib import Path

import jinja2
import pytest

from conftest import NGINX, REPO, free_ports, image, require_images, run_playbook, write_deploy_config

from ansible_collections.greenlight.deploy.plugins.module_utils._engine import cli, ops, state
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.options import options_from_dict
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.swap import run_swap

pytestmark = pytest.mark.docker

PAGE_MARK = "greenlight maintenance page"
MAIN_CONF = """
worker_processes 2;
user root;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    include {site};
}}
"""


class RoleNginx:
    """nginx running the proxy role's site.conf.j2 and maintenance page, as the role renders them."""

    def __init__(self, base: Path, app: str, static_root: Path) -> None:
        self.prefix = base / "role-nginx"
        (self.prefix / "tmp").mkdir(parents=True)
        include_dir = self.prefix / "greenlight"
        include_dir.mkdir()
        self.port, placeholder = free_ports(2)
        self.upstream_file = include_dir / ("%s-upstream.conf" % app)
        self.upstream_file.write_text("server 127.0.0.1:%d;\n" % placeholder)
        self.maintenance_file = include_dir / ("%s-maintenance.conf" % app)
        self.maintenance_file.write_text("# greenlight maintenance: off (deploy.sh maintenance on starts it)\n")
        templates = jinja2.Environment(loader=jinja2.FileSystemLoader(str(REPO / "roles" / "proxy" / "templates")),
                                       undefined=jinja2.StrictUndefined, trim_blocks=True)
        values = {
            "ansible_managed": "test", "greenlight_app_name": app, "proxy_tls_certificate": "",
            "proxy_default_server": False, "proxy_listen_ipv6": False, "proxy_listen_port": self.port,
            "proxy_server_names": ["_"], "proxy_upstream_name": app.replace("-", "_") + "_live",
            "proxy_upstream_file": str(self.upstream_file), "proxy_upstream_keepalive": 32,
            "proxy_placeholder_port": placeholder, "proxy_placeholder_message": "no release deployed yet",
            "proxy_static_url": "/static/", "proxy_static_root": str(static_root), "proxy_static_expires": "30d",
            "proxy_static_cache_control": "public, immutable", "proxy_client_max_body_size": "10m",
            "proxy_connect_timeout": "5s", "proxy_read_timeout": "60s", "proxy_maintenance_retry_after": 120,
            "_proxy_maintenance_dir": str(include_dir), "_proxy_maintenance_file": str(self.maintenance_file),
            "_proxy_maintenance_page_name": "%s-maintenance.html" % app,
            "_proxy_maintenance_bypass": "$greenlight_maintenance_bypass_" + app.replace("-", "_"),
        }
        site = self.prefix / "site.conf"
        site.write_text(templates.get_template("site.conf.j2").render(values))
        (include_dir / values["_proxy_maintenance_page_name"]).write_text(
            templates.get_template("maintenance.html.j2").render(values))
        (self.prefix / "nginx.conf").write_text(MAIN_CONF.format(prefix=self.prefix, site=site))
        self.argv = [NGINX, "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf")]

    def start(self) -> None:
        subprocess.run(self.argv, check=True, capture_output=True)

    def stop(self) -> None:
        subprocess.run(self.argv + ["-s", "stop"], capture_output=True, check=False)

    def get(self, path: str = "/health", headers: dict | None = None, method: str = "GET",
            body: str | None = None) -> tuple[int, str, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read().decode("utf-8", "replace"), dict(response.getheaders())
        finally:
            conn.close()


    def settle(self, status: int, path: str = "/health", timeout: float = 15) -> None:
        """Until 10 answers in a row have `status` (a reload reaches the workers asynchronously)."""
        deadline, good = time.monotonic() + timeout, 0
        while good < 10:
            assert time.monotonic() < deadline, "nginx did not settle on %d" % status
            good = good + 1 if self.get(path)[0] == status else 0
            time.sleep(0.02)


@pytest.fixture
def role_nginx(app_host):
    proxy = RoleNginx(app_host.app_dir.parent, app_host.app, app_host.nginx.static_root)
    proxy.start()
    yield proxy
    proxy.stop()


def options(app_host, role_nginx, **extra):
    values = {"upstream_file": str(role_nginx.upstream_file), "proxy_test_command": role_nginx.argv + ["-t", "-q"],
              "proxy_reload_command": role_nginx.argv + ["-s", "reload"],
              "proxy_verify_url": "http://127.0.0.1:%d/health" % role_nginx.port}
    values.update(extra)
    return app_host.options(**values)


class Counter:
    """Clients through nginx (keep-alive and a new connection per request); every answer counted as
    release-200, the maintenance page (503 + page + Retry-After), or anything else (kept)."""

    def __init__(self, port: int, threads: int = 6) -> None:
        self.port = port
        self.threads = threads
        self.counts = {"200": 0, "maintenance": 0}
        self.other: list = []
        self.stale_retries = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers = [threading.Thread(target=self._work, args=(n,), daemon=True) for n in range(threads)]

    def _count(self, key: str, detail=None) -> None:
        with self._lock:
            if key in self.counts:
                self.counts[key] += 1
            else:
                self.other.append(detail)

    def _send(self, conn, number: int, keep_alive: bool):
        conn.request("GET", ("/health", "/")[number % 2], headers={} if keep_alive else {"Connection": "close"})
        return conn.getresponse()

    def _work(self, number: int) -> None:
        keep_alive = number % 2 == 0
        conn = None
        while not self._stop.is_set():
            try:
                reused = conn is not None
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                try:
                    response = self._send(conn, number, keep_alive)
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                    if not reused:
                        raise
                    # A reused keep-alive connection closed by an old worker before it sent a byte:
                    # every HTTP client retries that once on a new connection (RFC 9112 9.3.1), as
                    # bench/loadgen.py does; counted, never hidden.
                    conn.close()
                    with self._lock:
                        self.stale_retries += 1
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                    response = self._send(conn, number, keep_alive)
                body = response.read().decode("utf-8", "replace")
                if response.status == 200 and response.getheader("X-Release"):
                    self._count("200")
                elif response.status == 503 and PAGE_MARK in body and response.getheader("Retry-After") == "120":
                    self._count("maintenance")
                else:
                    self._count("other", (response.status, response.getheader("Retry-After"), body[:80]))
                if not keep_alive or response.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                if conn is not None:
                    conn.close()
                conn = None
                self._count("other", "%s: %s" % (type(exc).__name__, exc))
            time.sleep(0.003)

    def wait_for(self, key: str, more: int, timeout: float = 60) -> None:
        """Until `more` further answers of kind `key` came (the switch before took effect)."""
        with self._lock:
            goal = self.counts[key] + more
        deadline = time.monotonic() + timeout
        while self.counts[key] < goal:
            assert time.monotonic() < deadline, (key, self.counts, self.other[:5])
            time.sleep(0.02)

    def start(self) -> "Counter":
        for worker in self._workers:
            worker.start()
        return self

    def stop(self) -> "Counter":
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=30)
        return self


def test_maintenance_on_off_under_load_and_a_deploy_during_it(app_host, role_nginx, capsys):
    require_images("v1", "v2")
    run_swap(options(app_host, role_nginx, image=image("v1")))
    opts = options_from_dict(options(app_host, role_nginx, mode="rollback"))
    assert ops.maintenance_path(opts) == str(role_nginx.maintenance_file)
    assert role_nginx.get()[0] == 200

    started = time.monotonic()
    counter = Counter(role_nginx.port).start()
    try:
        for _round in range(3):
            counter.wait_for("200", 10)
            assert ops.set_maintenance(opts, True, actor="test")["changed"] is True
            counter.wait_for("maintenance", 10)
            assert ops.set_maintenance(opts, False, actor="test")["changed"] is True
        counter.wait_for("200", 10)
    finally:
        counter.stop()
    print("load part: %.1fs, %s, %d stale keep-alive retries" % (time.monotonic() - started, counter.counts,
                                                                counter.stale_retries))
    assert counter.other == []
    # A graceful reload closes at most one idle keep-alive connection per client: 3 keep-alive
    # clients, 6 switches. More would mean connections dropped, retried out of sight.
    assert counter.stale_retries <= 3 * 6, counter.stale_retries
    assert counter.counts["200"] >= 40 and counter.counts["maintenance"] >= 30, counter.counts

    # On: the page with Retry-After, static files too; the engine's own check (local + header) gets through.
    ops.set_maintenance(opts, True)
    assert ops.set_maintenance(opts, True)["changed"] is False
    role_nginx.settle(503)
    status, body, headers = role_nginx.get("/static/lists/style.css")
    assert status == 503 and PAGE_MARK in body and headers["Retry-After"] == "120"
    # Every method gets the page (nginx serves files to GET and HEAD only: a form post must not see 405).
    for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        status, body, headers = role_nginx.get("/", method=method, body="title=x")
        assert (status, PAGE_MARK in body, headers.get("Retry-After")) == (503, True, "120"), (method, status, body[:200])
    assert role_nginx.get("/__greenlight-maintenance/%s-maintenance.html" % app_host.app,
                          headers={"X-Greenlight-Probe": "1"})[0] == 404  # internal only
    assert role_nginx.get(headers={"X-Greenlight-Probe": "1"})[0] == 200
    info = state.status(opts, "test")
    assert info["maintenance"] is True and info["live"]["release"] == "v1"

    # A deploy during maintenance: verified through nginx, v2 live behind it, maintenance stays on.
    deployed = run_swap(options(app_host, role_nginx, image=image("v2"), pre_switch_commands=[]))
    assert deployed["release"] == "v2"
    assert role_nginx.get()[0] == 503
    role_nginx.settle(503)
    assert role_nginx.get(headers={"X-Greenlight-Probe": "1"})[2].get("X-Release") == "v2"
    # deploy.sh maintenance off (the CLI, with its deploy.json).
    config = write_deploy_config(app_host, **options(app_host, role_nginx))
    assert cli.main(["maintenance", "off", "--actor", "ci-job-7"], config_path=str(config)) == 0
    assert "maintenance mode is off" in capsys.readouterr().out
    role_nginx.settle(200)
    status, _body, headers = role_nginx.get()
    assert status == 200 and headers.get("X-Release") == "v2" and "Retry-After" not in headers
    assert state.status(opts, "test")["maintenance"] is False

    switches = [r for r in app_host.audit_lines() if r["action"] == "maintenance"]
    assert [r["maintenance"] for r in switches] == ["on", "off"] * 4  # the no-op "on" wrote nothing
    assert switches[-1]["actor"]["by"] == "ci-job-7"
    # playbooks/maintenance.yml: check mode predicts, on, then off again.
    upstream = role_nginx.upstream_file
    played = run_playbook("maintenance.yml", app_host, "maintenance=on", check=True, upstream_file=upstream)
    assert played.returncode == 0 and "changed=1" in played.stdout, played.stdout + played.stderr
    assert role_nginx.get()[0] == 200
    played = run_playbook("maintenance.yml", app_host, "maintenance=on", upstream_file=upstream)
    assert played.returncode == 0 and "changed=1" in played.stdout, played.stdout + played.stderr
    role_nginx.settle(503)
    played = run_playbook("maintenance.yml", app_host, "maintenance=off", upstream_file=upstream)
    assert played.returncode == 0 and "changed=1" in played.stdout, played.stdout + played.stderr
    role_nginx.settle(200)
    assert [r["actor"].get("by") for r in app_host.audit_lines() if r["action"] == "maintenance"][-2:] == [
        "maintenance.yml", "maintenance.yml"]

    # A record of maintenance is not a deploy: the server is not "failed" or anything but live.
    assert state.status(opts, "test")["condition"] == "live"


def test_a_rejected_maintenance_switch_changes_nothing(app_host, role_nginx):
    opts = options_from_dict(options(app_host, role_nginx, mode="rollback", proxy_test_command=["false"]))
    before = role_nginx.maintenance_file.read_text()
    with pytest.raises(Exception) as caught:
        ops.set_maintenance(opts, True)
    assert "proxy test" in str(caught.value)
    assert role_nginx.maintenance_file.read_text() == before
    assert not app_host.releases_log.exists()
