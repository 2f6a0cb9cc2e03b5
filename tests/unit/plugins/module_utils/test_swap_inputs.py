"""Unit tests of the engine's input checks and secret redaction (issue 10: env file split like
Docker, full-match validation, release ids, health path and verify URL, log tails redacted)."""

from __future__ import annotations

import json
import re
import typing as t

import pytest

from ansible_collections.greenlight.deploy.plugins.module_utils._engine import cli_config, options, redact
from ansible_collections.greenlight.deploy.plugins.plugin_utils import _yaml_edit
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.envfile import parse_env_file
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.errors import OptionsError, SwapError
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.options import (
    options_from_dict,
    parse_image_reference,
    parse_mount,
)
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.swap import Swap

IMAGE_ID = "sha256:" + "ab" * 32

# Every character Python's str.splitlines splits on besides "\n" (and "\r\n"); Docker's env file
# reader (bufio.ScanLines) splits on "\n" only, dropping one "\r" before it.
OTHER_LINE_BREAKS = {"VT": "\v", "FF": "\f", "FS": "\x1c", "GS": "\x1d", "RS": "\x1e", "NEL": "\x85",
                     "LS": "\u2028", "PS": "\u2029", "CR": "\r"}


# -- env file split like Docker ------------------------------------------------------------------
@pytest.mark.parametrize("name", list(OTHER_LINE_BREAKS))
def test_env_value_with_a_line_separator_stays_one_variable(name):
    separator = OTHER_LINE_BREAKS[name]
    content = "SECRET=abc%sINJECTED=1\nB=2\n" % separator
    assert parse_env_file(content, {}) == ["SECRET=abc%sINJECTED=1" % separator, "B=2"]


def test_env_file_crlf_lines_lose_the_carriage_return_like_docker():
    assert parse_env_file("A=1\r\nB=2\rC\r\nD=4\r", {}) == ["A=1", "B=2\rC", "D=4"]


def test_env_file_leading_unicode_space_is_trimmed_like_go():
    # Go's unicode.IsSpace: trimmed at the head of a line; \x1c-\x1f are not spaces there.
    assert parse_env_file("\u2028\u00a0 A=1\n\u3000#comment\n\x85B=2\n", {}) == ["A=1", "B=2"]
    with pytest.raises(ValueError, match="line 1"):
        parse_env_file("\x1cA=1\n", {})


def test_env_file_line_of_64_kib_is_refused_like_docker():
    assert parse_env_file("A=%s\n" % ("x" * (65535 - 2)), {}) == ["A=" + "x" * 65533]
    with pytest.raises(ValueError) as caught:
        parse_env_file("B=1\nA=%s\n" % ("s" * 65534), {})
    assert "line 2" in str(caught.value) and "sss" not in str(caught.value)


# -- full-match regexes: a trailing newline is never valid ----------------------------------------
def _errors(**values: t.Any) -> str:
    base = {"app_name": "todo", "image": "greenlight/todo:v1"}
    base.update(values)
    with pytest.raises(OptionsError) as caught:
        options_from_dict(base)
    return str(caught.value)


@pytest.mark.parametrize("key, value, named", [
    ("app_name", "todo\n", "app_name"),
    ("release", "v1\n", "release"),
    ("image", "greenlight/todo:v1\n", "image"),
    ("image", "sha256:" + "ab" * 32 + "\n", "image"),
    ("proxy_verify_url", "http://127.0.0.1:8080\n/health", "proxy_verify_url"),
    ("mounts", ["vol\n:/data"], "mount"),
])
def test_engine_values_with_a_trailing_newline_are_refused(key, value, named):
    assert named in _errors(**{key: value})


def test_rollback_release_with_a_trailing_newline_is_refused():
    assert "rollback_release" in _errors(mode="rollback", image=None, rollback_release="v1\n")


def test_service_name_with_a_trailing_newline_is_refused():
    assert "services: name" in _errors(services=[{"name": "worker\n", "command": "true"}])


def test_every_python_pattern_refuses_a_trailing_newline():
    with pytest.raises(ValueError):
        parse_image_reference("greenlight/todo:v1\n")
    with pytest.raises(ValueError):
        parse_image_reference("sha256:" + "ab" * 32 + "\n")
    with pytest.raises(ValueError):
        parse_mount("data\n:/data")
    assert not cli_config.TAG_RE.match("v1\n") and cli_config.TAG_RE.match("v1")
    assert not cli_config.DIGEST_RE.match("sha256:" + "0" * 64 + "\n")
    assert not _yaml_edit.KEY_PATTERN.match("vault_key\n") and _yaml_edit.KEY_PATTERN.match("vault_key")
    for pattern in (options.APP_NAME_RE, options.RELEASE_RE, options.VOLUME_NAME_RE, options.IMAGE_ID_RE,
                    options.IMAGE_REFERENCE_RE):
        sample = {"IMAGE_ID_RE": IMAGE_ID, "IMAGE_REFERENCE_RE": "todo:v1"}.get(
            [k for k, v in vars(options).items() if v is pattern][0], "todo1")
        assert pattern.match(sample) and pattern.fullmatch(sample), pattern.pattern
        assert not pattern.match(sample + "\n") and not pattern.fullmatch(sample + "\n"), pattern.pattern


def test_image_with_a_trailing_newline_cannot_reach_the_cli():
    with pytest.raises(cli_config.CliError):
        cli_config.image_reference("v1\n", "registry.test/todo")


# -- a tag must be usable as a release id (rollback needs it) -------------------------------------
@pytest.mark.parametrize("tag", ["_v1", "v" * 65, "_" + "a" * 10])
def test_tag_that_cannot_be_a_release_id_is_refused_before_anything(tag):
    message = _errors(image="greenlight/todo:%s" % tag)
    assert "release" in message and "greenlight/todo:" in message


def test_long_or_underscore_tag_is_fine_with_an_explicit_release():
    opts = options_from_dict({"app_name": "todo", "image": "greenlight/todo:_" + "a" * 100, "release": "v7"})
    assert opts.release == "v7"


@pytest.mark.parametrize("tag", ["v1", "3f2c1ab", "a" * 64, "latest"])
def test_tags_that_are_release_ids_pass(tag):
    assert options_from_dict({"app_name": "todo", "image": "greenlight/todo:%s" % tag}).image.endswith(tag)


@pytest.mark.parametrize("tag", ["_v1", "v" * 65])
def test_cli_refuses_a_tag_that_cannot_be_a_release_id(tag):
    assert not cli_config.TAG_RE.match(tag)


# -- health path and verify URL are URL paths ----------------------------------------------------
@pytest.mark.parametrize("path", ["/he alth", "/health\n", "/health\t", "/h\x00", "/h\x7f", "/h#frag", "/h\u00e9",
                                  "/h\\x", "/h%zz", "health"])
def test_health_path_that_is_not_a_url_path_is_refused(path):
    assert "health_path" in _errors(health_path=path)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/he alth", "http://127.0.0.1/h\n", "http://localhost/h#x",
                                 "http://127.0.0.1:99999999999999999999/h", "http://127.0.0.1:80x/h"])
def test_verify_url_that_is_not_a_url_is_refused(url):
    assert "proxy_verify_url" in _errors(proxy_verify_url=url)


@pytest.mark.parametrize("path", ["/health", "/", "/api/v1/health?full=1&x=%20", "/~user/a-b_c.d!$'()*+,;=:@"])
def test_valid_health_paths_pass(path):
    opts = options_from_dict({"app_name": "todo", "image": "greenlight/todo:v1", "health_path": path,
                              "proxy_verify_url": "http://127.0.0.1:8080" + path})
    assert opts.health_path == path


# -- redaction of env values in container output -------------------------------------------------
def test_redact_replaces_every_value_naming_the_key():
    env = ["DJANGO_SECRET_KEY=s3cr3t-value", "SHORT=abc", "EMPTY=", "OTHER=s3cr3t-value-longer"]
    text = "boom s3cr3t-value and s3cr3t-value-longer; abc stays\n"
    out = redact.redact(text, env)
    assert "s3cr3t" not in out and "[redacted DJANGO_SECRET_KEY]" in out and "[redacted OTHER]" in out
    assert "abc stays" in out


class FailingDocker:
    """A fake Docker for a real-mode swap: the one-off container or the new web container prints
    the secret and fails."""

    def __init__(self, secret: str, fail: str) -> None:
        self.secret = secret
        self.fail = fail
        self.created: dict[str, dict[str, t.Any]] = {}
        self.removed: list[str] = []

    def inspect_image(self, reference):
        return {"Id": IMAGE_ID, "RepoDigests": []}

    def list_containers(self, labels=None, all=True):
        return []

    def create_container(self, name, config):
        container_id = "c%d" % len(self.created)
        self.created[container_id] = dict(config, name=name)
        return container_id

    def start_container(self, container_id):
        pass

    def wait_container(self, container_id, timeout=None):
        return 1 if self.fail == "pre_switch" else 0

    def container_logs(self, container_id, tail=50):
        env = dict(item.split("=", 1) for item in self.created[container_id]["Env"])
        return "Traceback: settings\nDJANGO_SECRET_KEY is %s\nand again:%s.\n" % (
            env["DJANGO_SECRET_KEY"], env["DJANGO_SECRET_KEY"])

    def inspect_container(self, container_id):
        return {"State": {"Running": False, "ExitCode": 3}}

    def remove_container(self, container_id, force=False):
        self.removed.append(container_id)


@pytest.mark.parametrize("fail", ["pre_switch", "health"])
def test_container_output_with_the_secret_is_redacted_everywhere(tmp_path, fail):
    secret = "CANARY" + "5e" * 12
    env_file = tmp_path / "todo.env"
    env_file.write_text("DJANGO_SECRET_KEY=%s\nDEBUG=1\n" % secret)
    upstream = tmp_path / "upstream.conf"
    upstream.write_text("server 127.0.0.1:8099;\n")
    options = {"app_name": "todo", "image": "greenlight/todo:v1", "app_dir": str(tmp_path / "app"),
               "env_file": str(env_file), "upstream_file": str(upstream), "health_timeout": 1,
               "pre_switch_commands": [["sh", "-c", "echo $DJANGO_SECRET_KEY; exit %d" % (fail == "pre_switch")]]}
    docker = FailingDocker(secret, fail)
    with pytest.raises(SwapError) as caught:
        Swap(options_from_dict(options), docker=docker).run()
    assert caught.value.result["failed_phase"] == fail
    assert any(secret in "".join(c["Env"]) for c in docker.created.values())  # control: the app had it
    message = str(caught.value)
    assert "[redacted DJANGO_SECRET_KEY]" in message, message  # control: the output is in the message
    audit = (tmp_path / "app" / "releases.jsonl").read_text()
    everything = message + json.dumps(caught.value.result, default=str) + audit
    assert everything.count(secret) == 0
    assert re.search(r"redacted DJANGO_SECRET_KEY", audit)


def test_pre_switch_output_returned_on_success_is_redacted(tmp_path):
    secret = "CANARY" + "7a" * 12
    env_file = tmp_path / "todo.env"
    env_file.write_text("DJANGO_SECRET_KEY=%s\n" % secret)
    upstream = tmp_path / "upstream.conf"
    upstream.write_text("server 127.0.0.1:8099;\n")
    options = {"app_name": "todo", "image": "greenlight/todo:v1", "app_dir": str(tmp_path / "app"),
               "env_file": str(env_file), "upstream_file": str(upstream), "health_timeout": 1,
               "pre_switch_commands": ["migrate"]}
    docker = FailingDocker(secret, "health")  # the one-off succeeds, the web container then fails
    with pytest.raises(SwapError) as caught:
        Swap(options_from_dict(options), docker=docker).run()
    output = caught.value.result["pre_switch_output"]
    assert "[redacted DJANGO_SECRET_KEY]" in output[0] and secret not in json.dumps(output)
