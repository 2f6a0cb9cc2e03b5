"""State of a server after greenlight.deploy.proxy for two apps: plainapp (plain HTTP, default
server) and demoapp (demoapp.test, TLS), with demoapp switched to a backend on port 8001."""
from __future__ import annotations

import json
import shlex
import time

import pytest

CERT = "/etc/ssl/certs/demoapp.test.crt"
TLS = f"--cacert {CERT} --resolve demoapp.test:443:127.0.0.1"


def curl(host, args: str) -> tuple[int, dict[str, str], str]:
    """Status, headers (lower-case names) and body of one request made inside the instance."""
    cmd = host.run(f"curl -sS -D - --max-time 10 {args}")
    assert cmd.rc == 0, cmd.stderr
    out = cmd.stdout
    head, _, body = out.replace("\r\n", "\n").partition("\n\n")
    lines = head.splitlines()
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return int(lines[0].split()[1]), headers, body


def test_nginx_running_and_enabled(host):
    assert host.package("nginx").is_installed
    nginx = host.service("nginx")
    assert nginx.is_running
    assert nginx.is_enabled


@pytest.mark.parametrize("spec", ["tcp://0.0.0.0:80", "tcp://:::80", "tcp://0.0.0.0:443", "tcp://127.0.0.1:8099"])
def test_listening(host, spec):
    assert host.socket(spec).is_listening


def test_config_valid(host):
    assert host.run("nginx -t").rc == 0


def test_sites(host):
    assert not host.file("/etc/nginx/sites-enabled/default").exists
    for app in ("demoapp", "plainapp"):
        site = host.file(f"/etc/nginx/sites-available/{app}.conf")
        assert site.user == "root" and site.mode == 0o644
        assert f"upstream {app}_live {{" in site.content_string
        assert f"include /etc/nginx/greenlight/{app}-upstream.conf;" in site.content_string
        assert "keepalive 32;" in site.content_string
        link = host.file(f"/etc/nginx/sites-enabled/{app}.conf")
        assert link.is_symlink and link.linked_to == f"/etc/nginx/sites-available/{app}.conf"


def test_upstream_files(host):
    directory = host.file("/etc/nginx/greenlight")
    assert directory.is_directory and directory.user == "root" and directory.mode == 0o755
    plain = host.file("/etc/nginx/greenlight/plainapp-upstream.conf")
    assert plain.user == "root" and plain.mode == 0o644
    assert plain.content_string == "server 127.0.0.1:8099;\n"
    # converge switched demoapp to 8001 and applied the role again: still 8001.
    assert host.file("/etc/nginx/greenlight/demoapp-upstream.conf").content_string == "server 127.0.0.1:8001;\n"


def test_sudoers(host):
    drop_in = host.file("/etc/sudoers.d/greenlight-demoapp")
    assert drop_in.user == "root" and drop_in.mode == 0o440
    assert host.run("visudo -c").rc == 0
    allowed = "sudo -u deploy sudo -n -l /usr/sbin/nginx"
    assert host.run(f"{allowed} -t").rc == 0
    assert host.run(f"{allowed} -s reload").rc == 0
    assert host.run(f"{allowed} -s stop").rc != 0
    assert host.run("sudo -u deploy sudo -n -l /bin/sh").rc != 0


def test_placeholder_answers_503(host):
    status, headers, body = curl(host, "http://127.0.0.1:8099/")
    assert status == 503 and body == "no release deployed yet\n"
    assert headers["content-type"].startswith("text/plain")


def test_fresh_site_answers_503_through_the_proxy(host):
    # Any host name → plainapp (default server), whose upstream is still the placeholder.
    status, _, body = curl(host, "http://127.0.0.1/some/page")
    assert status == 503 and body == "no release deployed yet\n"


def test_static_files_with_long_cache(host):
    status, headers, body = curl(host, "http://127.0.0.1/static/app.css")
    assert status == 200 and body == "body { color: blue; }\n"
    assert "max-age=2592000" in headers["cache-control"]
    assert "immutable" in headers["cache-control"] and "public" in headers["cache-control"]
    assert headers["expires"].endswith("GMT")
    status, _, _ = curl(host, "http://127.0.0.1/static/missing.css")
    assert status == 404


def test_http_redirects_to_https_with_tls(host):
    status, headers, _ = curl(host, "-H 'Host: demoapp.test' http://127.0.0.1/todo/?page=2")
    assert status == 301
    assert headers["location"] == "https://demoapp.test/todo/?page=2"


def test_tls_serves_static_with_the_test_certificate(host):
    # --cacert makes curl verify the chain and the name against the scenario's self-signed cert.
    status, headers, body = curl(host, f"{TLS} https://demoapp.test/static/app.css")
    assert status == 200 and body == "body { color: green; }\n"
    assert "immutable" in headers["cache-control"]


def test_switched_upstream_proxies_to_the_backend(host):
    """The swap engine's path (as root: deploy.sh runs through sudo): rewrite the upstream, test
    and reload, then demoapp.test answers from the backend with the forwarding headers set."""
    host.run("systemctl stop gl-echo-backend 2>/dev/null; systemctl reset-failed gl-echo-backend 2>/dev/null")
    try:
        host.check_output("systemd-run --unit gl-echo-backend /usr/local/bin/gl-echo-backend 8001")
        for _ in range(50):
            if host.run("curl -s -o /dev/null http://127.0.0.1:8001/").rc == 0:
                break
            time.sleep(0.1)
        switch = host.run(
            "sh -ec '"
            "printf \"server 127.0.0.1:8001;\\n\" > /etc/nginx/greenlight/.demoapp-upstream.tmp; "
            "mv /etc/nginx/greenlight/.demoapp-upstream.tmp /etc/nginx/greenlight/demoapp-upstream.conf; "
            "/usr/sbin/nginx -t; /usr/sbin/nginx -s reload'"
        )
        assert switch.rc == 0, switch.stderr
        time.sleep(1)  # reload is graceful: new workers take over asynchronously

        status, _, body = curl(host, f"{TLS} https://demoapp.test/items/?q=1")
        assert status == 200, body
        seen = json.loads(body)
        headers = {k.lower(): v for k, v in seen["headers"].items()}
        assert seen["path"] == "/items/?q=1"
        assert seen["version"] == "HTTP/1.1"
        assert "connection" not in headers  # cleared so upstream keep-alive works
        assert headers["host"] == "demoapp.test"
        assert headers["x-forwarded-host"] == "demoapp.test"
        assert headers["x-forwarded-proto"] == "https"
        assert headers["x-forwarded-for"] == "127.0.0.1"
        assert headers["x-real-ip"] == "127.0.0.1"

        # plainapp still answers from its placeholder: the switch touched only demoapp.
        status, _, body = curl(host, "http://127.0.0.1/")
        assert status == 503 and body == "no release deployed yet\n"
    finally:
        host.run("systemctl stop gl-echo-backend")


def test_deploy_user_cannot_change_what_nginx_includes(host):
    """The upstream directory and file are root's: nginx includes them as root."""
    for path, mode in (("/etc/nginx/greenlight", 0o755), ("/etc/nginx/greenlight/demoapp-upstream.conf", 0o644)):
        node = host.file(path)
        assert (node.user, node.group, node.mode) == ("root", "root", mode), path
    planted = host.run("sudo -u deploy sh -c 'echo \"include /etc/shadow;\" > /etc/nginx/greenlight/demoapp-upstream.conf'")
    assert planted.rc != 0
    created = host.run("sudo -u deploy touch /etc/nginx/greenlight/planted.conf")
    assert created.rc != 0
    assert "include" not in host.file("/etc/nginx/greenlight/demoapp-upstream.conf").content_string


def test_site_rejected_by_nginx_was_undone(host):
    """converge applied demoapp once more as a second default server of port 80: nginx -t
    rejected it, the role put the previous site back, and nothing of it reached nginx."""
    site = host.file("/etc/nginx/sites-available/demoapp.conf").content_string
    assert "default_server" not in site
    assert host.run("nginx -t").rc == 0
    leftovers = host.run("find /etc/nginx/sites-available /etc/nginx/sites-enabled -name '*~'")
    assert leftovers.rc == 0 and leftovers.stdout.strip() == ""


def _maintenance_content(on: bool) -> str:
    """What `deploy.sh maintenance on|off` writes (the engine's own rendering)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / ".collections"))
    from ansible_collections.greenlight.deploy.plugins.module_utils._engine.proxy_nginx import render_maintenance

    return render_maintenance("plainapp", on, "2026-11-29T00:00:00Z")


def _write_maintenance(host, content: str) -> None:
    path = "/etc/nginx/greenlight/plainapp-maintenance.conf"
    written = host.run("printf %s " + shlex.quote(content) + f" > {path}.tmp && mv {path}.tmp {path} && "
                       "/usr/sbin/nginx -t && /usr/sbin/nginx -s reload")
    assert written.rc == 0, written.stderr
    time.sleep(1)  # reload is graceful: new workers take over asynchronously


def test_maintenance_mode_answers_the_page_with_retry_after(host):
    """The role creates the maintenance include off (root's) and the page; switched on as the engine
    does, plainapp answers 503 with the page and Retry-After (static files too), the engine's own
    check (127.0.0.1 + X-Greenlight-Probe) still reaches the upstream, and demoapp is untouched."""
    include = host.file("/etc/nginx/greenlight/plainapp-maintenance.conf")
    assert (include.user, include.group, include.mode) == ("root", "root", 0o644)
    assert include.content_string == _maintenance_content(False)
    assert "greenlight maintenance page (plainapp)" in host.file("/etc/nginx/greenlight/plainapp-maintenance.html").content_string
    try:
        _write_maintenance(host, _maintenance_content(True))
        for path in ("/", "/static/app.css"):
            status, headers, body = curl(host, "http://127.0.0.1%s" % path)
            assert status == 503 and "greenlight maintenance page (plainapp)" in body, path
            assert headers["retry-after"] == "300" and headers["content-type"].startswith("text/html")
        status, _, body = curl(host, "-H 'X-Greenlight-Probe: 1' http://127.0.0.1/")
        assert status == 503 and body == "no release deployed yet\n"  # the placeholder: the upstream, not the page
        status, _, body = curl(host, f"{TLS} https://demoapp.test/")
        assert "maintenance" not in body
    finally:
        _write_maintenance(host, _maintenance_content(False))
    status, headers, body = curl(host, "http://127.0.0.1/")
    assert status == 503 and body == "no release deployed yet\n" and "retry-after" not in headers
