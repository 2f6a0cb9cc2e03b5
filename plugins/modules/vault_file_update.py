#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: vault_file_update
short_description: Change top-level values in an ansible-vault encrypted YAML file on the controller
version_added: 0.1.0
description:
  - Decrypts O(path) with the vault passwords the playbook was started with (C(--vault-id)), replaces the values of
    the given top-level keys in the text, and encrypts the file again with the same password and the same vault id
    (the one in the file's header C($ANSIBLE_VAULT;1.2;AES256;<id>)).
  - Only the values of the named keys change; every other line, comment, blank line and the order of the keys stay
    as they were, so C(ansible-vault view) before and after differs only in those keys. The new text is parsed again
    and must hold exactly the requested change, or nothing is written.
  - Keys that are not in the file yet are added at its end. Values are written as double-quoted YAML strings.
  - The file is replaced atomically (temporary file beside it, then rename) and keeps its mode.
  - Runs in the controller process; it never connects to the managed host. Use it with C(run_once) so one value is
    written once, not once per host.
  - Used by C(playbooks/rotate_secrets.yml); see C(docs/rotation.md).
author:
  - greenlight.deploy contributors (@greenlight)
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Decrypts and computes the change, writes nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details: Names the keys that change, are added or removed. Never shows a value.
  action:
    description: Indicates this has a corresponding action plugin so some parts of the options can be executed on the controller.
    support: full
    details: The whole module is the action plugin; there is no code that runs on the managed host.
options:
  path:
    description:
      - Controller path of a whole-file ansible-vault encrypted YAML mapping, for example
        C(inventories/staging/group_vars/staging/vault.yml). A symlink is followed and its target rewritten.
    type: path
    required: true
  set:
    description:
      - Top-level keys and their new string values. Never printed; use C(no_log) on the task anyway,
        since the values pass through its arguments.
    type: dict
    default: {}
  copy:
    description:
      - Destination key to source key; the destination gets the value the source had before this update.
      - With O(set) changing the source in the same task, this moves the old value aside, for example
        the previous Django secret key into C(vault_django_secret_key_fallbacks).
    type: dict
    default: {}
  remove:
    description:
      - Top-level keys to delete (the whole lines of the key and its value) when present.
    type: list
    elements: str
    default: []
  read:
    description:
      - Keys whose values before the update are returned in RV(read_values). Only for values that are not secret,
        such as a marker.
    type: list
    elements: str
    default: []
notes:
  - The file must be encrypted as a whole (C(ansible-vault encrypt)); single C(!vault) values inside a plain YAML file
    are not supported.
  - Duplicate top-level keys that the task touches, anchors referenced elsewhere and similar constructs make the task
    fail without writing; edit such files with C(ansible-vault edit).
"""

EXAMPLES = r"""
- name: Put a new Django secret key into the vault, the old one into the fallbacks
  greenlight.deploy.vault_file_update:
    path: "{{ inventory_dir }}/group_vars/staging/vault.yml"
    set:
      vault_django_secret_key: "{{ new_secret_key }}"
    copy:
      vault_django_secret_key_fallbacks: vault_django_secret_key
  run_once: true
  no_log: true

- name: Read a marker and list the keys without changing anything
  greenlight.deploy.vault_file_update:
    path: "{{ inventory_dir }}/group_vars/staging/vault.yml"
    read: [vault_greenlight_rotation_pending]
  run_once: true
  register: vault_state

- name: Remove the marker
  greenlight.deploy.vault_file_update:
    path: "{{ inventory_dir }}/group_vars/staging/vault.yml"
    remove: [vault_greenlight_rotation_pending]
  run_once: true
"""

RETURN = r"""
path:
  description: Real path of the file.
  returned: always
  type: str
vault_id:
  description: Vault id from the file's header (kept when the file is written); null for a 1.1 header without id.
  returned: success
  type: str
  sample: staging
variables:
  description: Top-level keys of the file after the update (names only).
  returned: success
  type: list
  elements: str
changed_keys:
  description: Keys whose value was replaced by a different one.
  returned: success
  type: list
  elements: str
added_keys:
  description: Keys that were not in the file and were added at its end.
  returned: success
  type: list
  elements: str
removed_keys:
  description: Keys that were removed.
  returned: success
  type: list
  elements: str
unchanged_keys:
  description: Keys of O(set) and O(copy) that already had the wanted value.
  returned: success
  type: list
  elements: str
read_values:
  description: Values of the keys named in O(read), before the update (null for a key that is not in the file).
  returned: success
  type: dict
writable:
  description: Whether the file and its directory can be written (checked in check mode as well).
  returned: success
  type: bool
"""
