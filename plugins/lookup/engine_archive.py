# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: engine_archive
author:
  - greenlight.deploy contributors (@greenlight)
short_description: The swap engine as one zip archive for servers
version_added: "0.1.0"
description:
  - Builds, on the controller, a zip archive of this collection's swap engine
    (C(plugins/module_utils/_engine/*.py)) as the Python package C(greenlight), and returns its path.
  - The archive is byte for byte the same for the same engine files (fixed timestamps and modes,
    sorted entries, stored uncompressed), so copying it to a server is idempotent; it lives in
    Ansible's local temporary directory of the run (never a shared one such as C(/tmp)), removed
    when the run ends; a file already there with other bytes is replaced.
  - The role C(greenlight.deploy.deploy_script) copies it next to C(deploy.sh), which imports the
    engine from it; one file to copy instead of one task round trip per engine file.
options: {}
"""

EXAMPLES = r"""
- name: Copy the swap engine
  ansible.builtin.copy:
    src: "{{ lookup('greenlight.deploy.engine_archive') }}"
    dest: /usr/local/lib/greenlight/todo/greenlight.zip
    owner: root
    group: root
    mode: "0644"
"""

RETURN = r"""
_raw:
  description: Path of the archive on the controller.
  type: list
  elements: path
"""

import hashlib
import io
import os
import tempfile
import zipfile

from ansible import constants as C
from ansible.errors import AnsibleError
from ansible.plugins.lookup import LookupBase

PACKAGE = "greenlight"
ENGINE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "module_utils", "_engine")
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def engine_archive_bytes(engine_dir: str = ENGINE_DIR) -> bytes:
    """The zip of engine_dir/*.py under PACKAGE/, the same bytes for the same files."""
    names = sorted(name for name in os.listdir(engine_dir) if name.endswith(".py"))
    if "__init__.py" not in names or "cli.py" not in names:
        raise AnsibleError("greenlight.deploy: the swap engine is incomplete in %s (no __init__.py or cli.py)"
                           % engine_dir)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name in names:
            with open(os.path.join(engine_dir, name), "rb") as handle:
                data = handle.read()
            info = zipfile.ZipInfo("%s/%s" % (PACKAGE, name), date_time=FIXED_TIME)
            info.external_attr = 0o100644 << 16
            info.create_system = 3  # unix, whatever the controller is
            archive.writestr(info, data)
    return buffer.getvalue()


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        data = engine_archive_bytes()
        # Ansible's local temporary directory of this run (private, removed when the run ends);
        # never a shared one such as /tmp, where another user could plant the file first.
        directory = C.DEFAULT_LOCAL_TMP
        if not os.path.isdir(directory):
            raise AnsibleError("greenlight.deploy: Ansible's local temporary directory %s does not exist" % directory)
        path = os.path.join(directory, "greenlight-engine-%s.zip" % hashlib.sha256(data).hexdigest()[:16])
        try:
            with open(path, "rb") as handle:
                if handle.read() == data:
                    return [path]
        except FileNotFoundError:
            pass
        fd, temp = tempfile.mkstemp(dir=directory, prefix=".greenlight-engine-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(temp, path)
        except BaseException:
            try:
                os.unlink(temp)
            except OSError:
                pass
            raise
        return [path]
