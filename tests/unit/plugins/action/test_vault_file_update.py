"""Unit tests of greenlight.deploy.vault_file_update: the textual YAML edit and the action plugin
(real ansible-vault encryption, a DataLoader holding the vault secrets, no managed host)."""

from __future__ import annotations

import os
import re
import stat
import textwrap
import typing as t
from pathlib import Path
from unittest import mock

import pytest
import yaml

from ansible.parsing.dataloader import DataLoader
from ansible.parsing.vault import VaultLib, VaultSecret

from ansible_collections.greenlight.deploy.plugins.action.vault_file_update import ActionModule
from ansible_collections.greenlight.deploy.plugins.plugin_utils._yaml_edit import YamlEditError, update_text

VAULT_TEXT = textwrap.dedent("""\
    ---
    # staging secrets (ansible-vault, vault id "staging").
    vault_django_secret_key: "old-key-0123456789"  # rotated by rotate_secrets.yml

    # Registry access token (read:package).
    vault_registry_token: 'old-token'
    vault_email_host_password: "mail-password"
    vault_multi: |
      line one
      line two
    vault_empty:
    """)


def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    """Pairs of differing lines (same position); lines added at the end paired with ''."""
    old, new = before.splitlines(), after.splitlines()
    pairs = [(a, b) for a, b in zip(old, new) if a != b]
    pairs += [("", b) for b in new[len(old):]] + [(a, "") for a in old[len(new):]]
    return pairs


# ---------------------------------------------------------------------------------------------
# The textual edit
# ---------------------------------------------------------------------------------------------
def test_set_replaces_only_the_value_keeping_comments_order_and_quoting_of_others() -> None:
    text, report = update_text(VAULT_TEXT, {"vault_django_secret_key": "new-key"})
    assert report == {"changed": ["vault_django_secret_key"], "added": [], "removed": [], "unchanged": []}
    assert changed_lines(VAULT_TEXT, text) == [
        ('vault_django_secret_key: "old-key-0123456789"  # rotated by rotate_secrets.yml',
         'vault_django_secret_key: "new-key"  # rotated by rotate_secrets.yml')]


def test_copy_takes_the_value_from_before_the_update_and_new_keys_go_to_the_end() -> None:
    text, report = update_text(VAULT_TEXT, {"vault_django_secret_key": "new-key", "vault_marker": "django_secret_key"},
                               copy={"vault_django_secret_key_fallbacks": "vault_django_secret_key"})
    assert report["changed"] == ["vault_django_secret_key"]
    assert report["added"] == ["vault_marker", "vault_django_secret_key_fallbacks"]
    data = yaml.safe_load(text)
    assert data["vault_django_secret_key"] == "new-key"
    assert data["vault_django_secret_key_fallbacks"] == "old-key-0123456789"
    assert text.startswith(VAULT_TEXT.replace('"old-key-0123456789"', '"new-key"'))
    assert text.endswith('vault_marker: "django_secret_key"\nvault_django_secret_key_fallbacks: "old-key-0123456789"\n')


def test_copy_onto_an_existing_key_replaces_its_value() -> None:
    text, _ = update_text(VAULT_TEXT, copy={"vault_email_host_password": "vault_registry_token"})
    assert yaml.safe_load(text)["vault_email_host_password"] == "old-token"
    assert len(changed_lines(VAULT_TEXT, text)) == 1


def test_remove_deletes_the_whole_entry_and_nothing_else() -> None:
    text, report = update_text(VAULT_TEXT, remove=["vault_multi", "vault_not_there"])
    assert report["removed"] == ["vault_multi"]
    assert text == VAULT_TEXT.replace("vault_multi: |\n  line one\n  line two\n", "")


def test_an_unchanged_value_is_not_a_change() -> None:
    text, report = update_text(VAULT_TEXT, {"vault_registry_token": "old-token"})
    assert text == VAULT_TEXT
    assert report == {"changed": [], "added": [], "removed": [], "unchanged": ["vault_registry_token"]}


@pytest.mark.parametrize("key", ["vault_multi", "vault_empty", "vault_registry_token"])
def test_block_scalars_empty_and_single_quoted_values_are_replaced(key: str) -> None:
    text, _ = update_text(VAULT_TEXT, {key: "x"})
    expected = yaml.safe_load(VAULT_TEXT)
    expected[key] = "x"
    assert yaml.safe_load(text) == expected


@pytest.mark.parametrize("value", ['quote " and \\ backslash', "colon: hash # end", "ünïcödé ✓", "{{ not_a_template }}",
                                   "'single'", "- dash", "  spaces  ", "", "yes", "0755", "tab\tinside"])
def test_values_are_quoted_so_yaml_reads_back_the_exact_string(value: str) -> None:
    text, _ = update_text(VAULT_TEXT, {"vault_django_secret_key": value})
    assert yaml.safe_load(text)["vault_django_secret_key"] == value


def test_an_empty_file_gets_the_keys() -> None:
    text, report = update_text("", {"vault_a": "1"})
    assert text == 'vault_a: "1"\n' and report["added"] == ["vault_a"]
    text, _ = update_text("---\n# only a comment", {"vault_a": "1"})
    assert text == '---\n# only a comment\nvault_a: "1"\n'


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        ("a: 1\na: 2\n", {"set_values": {"a": "x"}}, "keys defined more than once in the file: a"),
        ("- a\n- b\n", {"set_values": {"a": "x"}}, "not a YAML mapping"),
        ("a: [unclosed\n", {"set_values": {"a": "x"}}, "not valid YAML"),
        ("a: &anchor secret\nb: *anchor\n", {"set_values": {"a": "x"}}, "would change more than these keys"),
        ("a: 1\n", {"copy": {"b": "missing"}}, "keys to copy from are not in the file: missing"),
        ("a: 1\n", {"set_values": {"bad-name": "x"}}, "invalid variable name 'bad-name'"),
        ("a: 1\n", {"set_values": {"a": "x"}, "remove": ["a"]}, "keys given more than once"),
        ("a: 1\n", {"set_values": {"a": 5}}, "the value for a is not a string"),
    ],
    ids=["duplicate", "not-a-mapping", "invalid-yaml", "anchor", "copy-missing", "bad-name", "set-and-remove", "not-str"],
)
def test_unsafe_edits_fail_with_a_message_naming_keys_only(text: str, kwargs: dict[str, t.Any], message: str) -> None:
    with pytest.raises(YamlEditError, match=message.replace("(", r"\(").replace("[", r"\[")) as error:
        update_text(text, **kwargs)
    assert "secret" not in str(error.value)


# ---------------------------------------------------------------------------------------------
# The action plugin
# ---------------------------------------------------------------------------------------------
PASSWORD = b"unit-test-vault-password"


def encrypt(path: Path, text: str, vault_id: t.Optional[str] = "staging", mode: int = 0o640) -> None:
    path.write_bytes(VaultLib().encrypt(text.encode(), secret=VaultSecret(PASSWORD), vault_id=vault_id))
    os.chmod(path, mode)


def decrypt(path: Path, password: bytes = PASSWORD) -> str:
    return VaultLib([("any", VaultSecret(password))]).decrypt(path.read_bytes()).decode()


def run_action(args: dict[str, t.Any], secrets: t.Optional[list[tuple[str, bytes]]] = None,
               check_mode: bool = False, diff: bool = False) -> dict[str, t.Any]:
    loader = DataLoader()
    loader.set_vault_secrets([(vault_id, VaultSecret(password))
                              for vault_id, password in (secrets if secrets is not None else [("staging", PASSWORD)])])
    task = mock.MagicMock()
    task.args = args
    task.async_val = 0
    task.check_mode = check_mode
    task.diff = diff
    action = ActionModule(task, mock.MagicMock(), mock.MagicMock(), loader, None, None)
    return action.run(task_vars={})


def test_rewrites_the_file_with_the_same_vault_id_password_and_mode(tmp_path: Path) -> None:
    vault = tmp_path / "vault.yml"
    encrypt(vault, VAULT_TEXT, mode=0o640)
    inode = vault.stat().st_ino
    result = run_action({"path": str(vault), "set": {"vault_django_secret_key": "new-key"},
                         "copy": {"vault_django_secret_key_fallbacks": "vault_django_secret_key"}})
    assert result["changed"] and not result.get("failed"), result
    assert result["changed_keys"] == ["vault_django_secret_key"]
    assert result["added_keys"] == ["vault_django_secret_key_fallbacks"]
    assert result["vault_id"] == "staging"
    assert vault.read_bytes().startswith(b"$ANSIBLE_VAULT;1.2;AES256;staging\n")
    assert stat.S_IMODE(vault.stat().st_mode) == 0o640
    assert vault.stat().st_ino != inode, "not replaced by a rename"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vault.yml"], "temporary file left behind"
    after = decrypt(vault)
    assert changed_lines(VAULT_TEXT, after) == [
        ('vault_django_secret_key: "old-key-0123456789"  # rotated by rotate_secrets.yml',
         'vault_django_secret_key: "new-key"  # rotated by rotate_secrets.yml'),
        ("", 'vault_django_secret_key_fallbacks: "old-key-0123456789"')]
    assert "new-key" not in repr(result) and "old-key" not in repr(result)


def test_a_file_without_vault_id_keeps_its_1_1_header(tmp_path: Path) -> None:
    vault = tmp_path / "vault.yml"
    encrypt(vault, VAULT_TEXT, vault_id=None)
    assert vault.read_bytes().startswith(b"$ANSIBLE_VAULT;1.1;AES256\n")
    result = run_action({"path": str(vault), "remove": ["vault_empty"]}, secrets=[("default", PASSWORD)])
    assert result["changed"] and result["vault_id"] is None
    assert vault.read_bytes().startswith(b"$ANSIBLE_VAULT;1.1;AES256\n")
    assert "vault_empty" not in decrypt(vault)


def test_the_secret_that_opens_the_file_encrypts_it_again(tmp_path: Path) -> None:
    vault = tmp_path / "vault.yml"
    encrypt(vault, VAULT_TEXT)
    result = run_action({"path": str(vault), "set": {"vault_a": "1"}},
                        secrets=[("production", b"another-password"), ("staging", PASSWORD)])
    assert result["changed"]
    assert "vault_a" in decrypt(vault)
    with pytest.raises(Exception):
        decrypt(vault, b"another-password")


def test_read_returns_marker_values_and_changes_nothing(tmp_path: Path) -> None:
    vault = tmp_path / "vault.yml"
    encrypt(vault, VAULT_TEXT + 'vault_greenlight_rotation_pending: "django_secret_key"\n')
    before = vault.read_bytes()
    result = run_action({"path": str(vault), "read": ["vault_greenlight_rotation_pending", "vault_absent"]})
    assert result["changed"] is False and result["writable"] is True
    assert result["read_values"] == {"vault_greenlight_rotation_pending": "django_secret_key", "vault_absent": None}
    assert "vault_registry_token" in result["variables"]
    assert vault.read_bytes() == before


def test_check_mode_reports_and_writes_nothing_and_diff_names_keys_only(tmp_path: Path) -> None:
    vault = tmp_path / "vault.yml"
    encrypt(vault, VAULT_TEXT)
    before = vault.read_bytes()
    result = run_action({"path": str(vault), "set": {"vault_registry_token": "brand-new-token"},
                         "copy": {"vault_fallback": "vault_email_host_password"}, "remove": ["vault_multi"]},
                        check_mode=True, diff=True)
    assert result["changed"] is True
    assert vault.read_bytes() == before
    diff = result["diff"]
    assert "vault_registry_token" in diff["before"] and "vault_registry_token" in diff["after"]
    assert "vault_fallback: (previous value of vault_email_host_password, hidden)" in diff["after"]
    assert "vault_multi" in diff["before"]
    for value in ("brand-new-token", "old-token", "mail-password", "line one"):
        assert value not in repr(result)


@pytest.mark.parametrize(
    ("content", "secrets", "message"),
    [
        (None, [("staging", b"wrong-password")], "cannot decrypt .* wrong password"),
        (None, [], "no vault password was given; run ansible-playbook with --vault-id staging@"),
        ("plain: yaml\n", None, "is not an ansible-vault encrypted file"),
    ],
    ids=["wrong-password", "no-password", "not-encrypted"],
)
def test_failures_write_nothing(tmp_path: Path, content: t.Optional[str], secrets: t.Any, message: str) -> None:
    vault = tmp_path / "vault.yml"
    if content is None:
        encrypt(vault, VAULT_TEXT)
    else:
        vault.write_text(content)
    before = vault.read_bytes()
    result = run_action({"path": str(vault), "set": {"vault_django_secret_key": "new-key"}}, secrets=secrets)
    assert result["failed"] is True and result["changed"] is False
    assert re.search(message, result["msg"]), result["msg"]
    assert vault.read_bytes() == before
    assert "new-key" not in result["msg"]


def test_an_unsafe_edit_fails_without_writing(tmp_path: Path) -> None:
    vault = tmp_path / "vault.yml"
    encrypt(vault, "vault_a: &shared one\nvault_b: *shared\n")
    before = vault.read_bytes()
    result = run_action({"path": str(vault), "set": {"vault_a": "two"}})
    assert result["failed"] and "Nothing was written" in result["msg"]
    assert "one" not in result["msg"] and "two" not in result["msg"]
    assert vault.read_bytes() == before


def test_a_file_that_cannot_be_written_fails_before_writing(tmp_path: Path) -> None:
    vault = tmp_path / "vault.yml"
    encrypt(vault, VAULT_TEXT)
    before = vault.read_bytes()
    # The test runs as root, who may write anywhere: pretend the permissions say no.
    with mock.patch("os.access", return_value=False):
        checked = run_action({"path": str(vault), "set": {"vault_a": "1"}}, check_mode=True)
        result = run_action({"path": str(vault), "set": {"vault_a": "1"}})
    assert checked["writable"] is False and not checked.get("failed")
    assert result["failed"] and "permissions" in result["msg"]
    assert vault.read_bytes() == before


def test_a_symlink_is_followed_and_kept(tmp_path: Path) -> None:
    real = tmp_path / "real-vault.yml"
    encrypt(real, VAULT_TEXT)
    link = tmp_path / "vault.yml"
    link.symlink_to(real.name)
    result = run_action({"path": str(link), "set": {"vault_a": "1"}})
    assert result["changed"] and result["path"] == str(real)
    assert link.is_symlink() and "vault_a" in decrypt(link)
