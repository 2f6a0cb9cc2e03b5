# -*- coding: utf-8 -*-

# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Action plugin of greenlight.deploy.vault_file_update (documentation: plugins/modules/vault_file_update.py).

Runs entirely in the controller process: it needs the vault secrets the playbook was started
with (--vault-id), which only the controller's loader holds, and the file lives on the
controller. Nothing is sent to a managed host.
"""

from __future__ import annotations

import os
import stat
import tempfile
import typing as t

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text
from ansible.parsing.vault import VaultLib, is_encrypted, parse_vaulttext_envelope
from ansible.plugins.action import ActionBase

from ansible_collections.greenlight.deploy.plugins.plugin_utils._yaml_edit import (
    YamlEditError,
    load_mapping,
    update_text,
)

ARGUMENT_SPEC: dict[str, t.Any] = {
    "path": {"type": "path", "required": True},
    "set": {"type": "dict", "default": {}, "no_log": True},
    "copy": {"type": "dict", "default": {}},
    "remove": {"type": "list", "elements": "str", "default": []},
    "read": {"type": "list", "elements": "str", "default": []},
}


class VaultFileError(Exception):
    """A failure with a message a user can act on; never carries a secret value."""


def atomic_write(path: str, data: bytes) -> None:
    """Replace `path` with `data` through a temp file in the same directory (same mode and owner)."""
    current = os.stat(path)
    directory, name = os.path.split(path)
    descriptor, temp_path = tempfile.mkstemp(prefix=".%s." % name, suffix=".tmp", dir=directory)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_path, stat.S_IMODE(current.st_mode))
        if (current.st_uid, current.st_gid) != (os.geteuid(), os.getegid()):
            try:
                os.chown(temp_path, current.st_uid, current.st_gid)
            except PermissionError:
                pass  # not root: the file becomes ours, as with any editor
        os.replace(temp_path, path)
    except BaseException:
        try:
            os.unlink(temp_path)
        except FileNotFoundError:
            pass
        raise
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


def _diff(path: str, report: dict[str, list[str]], copy: dict[str, str]) -> dict[str, str]:
    """Before/after naming the keys that change; the values are never shown."""
    before, after = [], []
    for name in report["changed"]:
        before.append("%s: (current value, hidden)\n" % name)
    for name in report["removed"]:
        before.append("%s: (value hidden, removed)\n" % name)
    for name in report["changed"] + report["added"]:
        source = copy.get(name)
        after.append("%s: (%s, hidden)\n" % (name, "previous value of %s" % source if source else "new value"))
    return {"before_header": path, "after_header": path, "before": "".join(before), "after": "".join(after)}


class ActionModule(ActionBase):
    """Rewrite top-level keys of a vault-encrypted YAML file on the controller."""

    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: t.Any = None, task_vars: t.Optional[dict[str, t.Any]] = None) -> dict[str, t.Any]:
        result = super().run(tmp, task_vars)
        del tmp
        _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        try:
            result.update(self._update(args))
        except VaultFileError as exc:
            result.update(failed=True, changed=False, msg=str(exc))
        return result

    def _update(self, args: dict[str, t.Any]) -> dict[str, t.Any]:
        path = os.path.realpath(args["path"])
        # Values may arrive as Ansible's tagged string types; plain str from here on.
        set_values = {to_text(name): to_text(value) if isinstance(value, str) else value
                      for name, value in (args["set"] or {}).items()}
        copy = {to_text(name): to_text(source) for name, source in (args["copy"] or {}).items()}
        remove = [to_text(name) for name in args["remove"] or []]
        read = [to_text(name) for name in args["read"] or []]

        try:
            with open(path, "rb") as handle:
                b_vaulttext = handle.read()
        except OSError as exc:
            raise VaultFileError("cannot read the vault file %s: %s" % (path, exc.strerror)) from None
        if not is_encrypted(b_vaulttext):
            raise VaultFileError("%s is not an ansible-vault encrypted file (it must start with $ANSIBLE_VAULT;); "
                                 "encrypt it with ansible-vault encrypt --vault-id <id>@<password source>" % path)
        try:
            _b_ciphertext, b_version, _cipher, header_vault_id = parse_vaulttext_envelope(b_vaulttext)
        except AnsibleError as exc:
            raise VaultFileError("%s has a damaged ansible-vault header: %s" % (path, to_native(exc))) from None
        vault_id = header_vault_id if to_text(b_version) == "1.2" else None

        vault: VaultLib = self._loader._vault  # pylint: disable=protected-access
        if not vault.secrets:
            raise VaultFileError("no vault password was given; run ansible-playbook with --vault-id %s@<password file "
                                 "or client script>" % (vault_id or "<id>"))
        try:
            b_plaintext, _used_id, used_secret = vault.decrypt_and_get_vault_id(b_vaulttext)
        except AnsibleError:
            raise VaultFileError("cannot decrypt %s (vault id %s) with the vault password(s) given: wrong password "
                                 "or --vault-id? Nothing was written." % (path, vault_id or "none")) from None
        try:
            text = to_text(b_plaintext, errors="surrogate_or_strict")
            before = load_mapping(text)
            new_text, report = update_text(text, set_values, copy, remove)
        except (YamlEditError, UnicodeError) as exc:
            raise VaultFileError("cannot update %s: %s. Nothing was written." % (path, exc)) from None

        changed = bool(report["changed"] or report["added"] or report["removed"])
        directory = os.path.dirname(path)
        writable = os.access(path, os.W_OK) and os.access(directory, os.W_OK | os.X_OK)
        if changed and not self._task.check_mode:
            if not writable:
                raise VaultFileError("cannot write %s or create a temporary file beside it (permissions); nothing "
                                     "was written" % path)
            b_new = VaultLib().encrypt(to_bytes(new_text, errors="surrogate_or_strict"), secret=used_secret,
                                       vault_id=vault_id)
            try:
                atomic_write(path, b_new)
            except OSError as exc:
                raise VaultFileError("cannot write %s: %s; the file was left as it was" % (path, exc.strerror)) from None

        values = {}
        for name in read:
            value = before.get(name)
            values[name] = value if value is None or isinstance(value, (str, int, float, bool)) else str(value)
        out: dict[str, t.Any] = {
            "changed": changed,
            "path": path,
            "vault_id": vault_id,
            "variables": sorted(name for name in load_mapping(new_text)),
            "changed_keys": report["changed"],
            "added_keys": report["added"],
            "removed_keys": report["removed"],
            "unchanged_keys": report["unchanged"],
            "read_values": values,
            "writable": writable,
        }
        if self._task.diff and changed:
            out["diff"] = _diff(path, report, copy)
        return out
