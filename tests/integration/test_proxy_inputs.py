"""Every proxy role value that reaches the nginx site file is checked in the role's preflight:
a bad one stops the role before it changes anything, with a message naming the variable.

One throwaway `greenlight/server:bookworm` container (reached with `docker exec`) and one
playbook run: each case includes the role in its own block and records the failure message.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"

pytestmark = pytest.mark.docker

TLS = {"proxy_tls_certificate": "/etc/ssl/certs/ssl-cert-snakeoil.pem",
       "proxy_tls_certificate_key": "/etc/ssl/private/ssl-cert-snakeoil.key"}

# (variable the message must name, role vars)
BAD = {
    "server name with ;": ("proxy_server_names", {"proxy_server_names": ["example.com; return 200"]}),
    "server name with space": ("proxy_server_names", {"proxy_server_names": ["example.com evil.test"]}),
    "server name with newline": ("proxy_server_names", {"proxy_server_names": ["example.com\n"]}),
    "server name with $": ("proxy_server_names", {"proxy_server_names": ["*.example.com", "bad$host"]}),
    "server name with quote": ("proxy_server_names", {"proxy_server_names": ["a\"b.test"]}),
    "read timeout injects": ("proxy_read_timeout", {"proxy_read_timeout": "60s; proxy_pass http://192.0.2.1"}),
    "connect timeout spaced": ("proxy_connect_timeout", {"proxy_connect_timeout": "5 s"}),
    "body size injects": ("proxy_client_max_body_size", {"proxy_client_max_body_size": "10m;"}),
    "cache-control breaks quotes": ("proxy_static_cache_control",
                                    {"proxy_static_cache_control": 'public" always; add_header X-Evil "1'}),
    "expires injects": ("proxy_static_expires", {"proxy_static_expires": "30d; autoindex on"}),
    "certificate path with space": ("proxy_tls_certificate",
                                    dict(TLS, proxy_tls_certificate="/etc/ssl/certs/a b.pem")),
    "key path with ;": ("proxy_tls_certificate_key",
                        dict(TLS, proxy_tls_certificate_key="/etc/ssl/private/k;ey")),
    "certificate without key": ("proxy_tls_certificate",
                                {"proxy_tls_certificate": "/etc/ssl/certs/ssl-cert-snakeoil.pem"}),
    "tls protocol injects": ("proxy_tls_protocols", {"proxy_tls_protocols": ["TLSv1.2;"]}),
    "static url with newline": ("proxy_static_url", {"proxy_static_url": "/static/\n"}),
    "placeholder message with newline": ("proxy_placeholder_message", {"proxy_placeholder_message": "a\nb"}),
    "listen port out of range": ("proxy_listen_port", {"proxy_listen_port": 70000}),
    "tls port same as http": ("proxy_tls_port", {"proxy_tls_port": 80}),
    "keepalive zero": ("proxy_upstream_keepalive", {"proxy_upstream_keepalive": 0}),
    "upstream file with space": ("proxy_upstream_file", {"proxy_upstream_file": "/etc/nginx/x y.conf"}),
    "static root with $": ("proxy_static_root", {"proxy_static_root": "/var/www/$host"}),
}
# Values nginx accepts: preflight passes them and stops later, at the deploy user check (the
# throwaway server has no deploy user), before any change.
GOOD = {
    "defaults": {},
    "wildcards and any-host": {"proxy_server_names": ["*.example.com", "example.com", "_", "xn--bcher-kva.example"],
                               "proxy_read_timeout": "1h30m", "proxy_client_max_body_size": "0",
                               "proxy_static_cache_control": "public, max-age=600", "proxy_static_expires": "max"},
}


def _env() -> dict[str, str]:
    return dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / ".collections"), ANSIBLE_NOCOLOR="1",
                ANSIBLE_FORCE_COLOR="false", ANSIBLE_STDOUT_CALLBACK="default",
                PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")


def _case_block(name: str, role_vars: dict) -> dict:
    return {
        "name": "Case %s" % name,
        "block": [{"name": "Include the role (%s)" % name, "ansible.builtin.include_role":
                   {"name": "greenlight.deploy.proxy"}, "vars": dict({"greenlight_app_name": "inputs"}, **role_vars)}],
        "rescue": [{"name": "Record (%s)" % name, "ansible.builtin.set_fact": {
            "proxy_input_results": "{{ proxy_input_results | combine({%s: ansible_failed_result.msg | default('')"
                                   " | string}) }}" % json.dumps(name)}}],
    }


@pytest.fixture(scope="module")
def outcome(tmp_path_factory) -> dict[str, str]:
    """Run every case once against one throwaway server; returns case -> failure message."""
    name = "gl-proxy-inputs-%s" % secrets.token_hex(4)
    subprocess.run(["docker", "run", "-d", "--rm", "--name", name, "greenlight/server:bookworm", "sleep", "600"],
                   check=True, capture_output=True)
    try:
        base = tmp_path_factory.mktemp("proxy-inputs")
        (base / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {name: {
            "ansible_connection": "community.docker.docker", "ansible_python_interpreter": "/usr/bin/python3"}}}}))
        cases = dict(BAD)
        cases.update({"good: " + key: ("proxy_deploy_user", value) for key, value in GOOD.items()})
        tasks = [{"name": "Start", "ansible.builtin.set_fact": {"proxy_input_results": {}}}]
        tasks += [_case_block(case, role_vars) for case, (_variable, role_vars) in cases.items()]
        tasks.append({"name": "Results", "ansible.builtin.copy": {
            "content": "{{ proxy_input_results | to_json }}", "dest": str(base / "results.json")},
            "delegate_to": "localhost"})
        playbook = [{"name": "Proxy inputs", "hosts": "all", "gather_facts": True, "tasks": tasks}]
        (base / "play.yml").write_text(yaml.safe_dump(playbook, sort_keys=False))
        proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(base / "hosts.yml"), str(base / "play.yml")],
                              cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600, check=False)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        results = json.loads((base / "results.json").read_text())
        # Nothing was installed or written: the role stopped before install.
        untouched = subprocess.run(["docker", "exec", name, "test", "-e", "/etc/nginx"], check=False)
        assert untouched.returncode != 0, "the role changed the server"
        return results
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_proxy_value_fails_in_preflight_naming_the_variable(outcome, case):
    variable = BAD[case][0]
    message = outcome.get(case)
    assert message is not None, "case %s did not fail" % case
    assert "deploy user" not in message, "preflight let %s through: %s" % (case, message)
    assert variable in message, message


@pytest.mark.parametrize("case", sorted(GOOD))
def test_valid_proxy_values_pass_the_variable_checks(outcome, case):
    message = outcome.get("good: " + case, "")
    assert "the deploy user 'deploy'" in message and "does not exist" in message, message
