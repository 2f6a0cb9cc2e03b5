#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: container_swap_info
short_description: Read what M(greenlight.deploy.container_swap) left on a server
version_added: 0.2.0
description:
  - Returns the live release (the running web container the nginx upstream file names), the releases kept for
    rollback, who holds the deploy lock and in which phase, the last audit records and the last deploy's record,
    and one word for the server's RV(condition).
  - Reads the server's state with the swap engine's one reader (the same as C(deploy.sh status) and the deploy's
    plan), so it cannot disagree with them. Changes nothing, takes no lock.
  - Talks to the Docker Engine API over its unix socket with the Python standard library only.
  - C(playbooks/status.yml) in the collection prints a fleet's state as one table (and JSON) with this module.
author:
  - greenlight.deploy contributors (@greenlight)
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Reads only; the same answer in check mode.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
options:
  app_name:
    description:
      - Name of the application, as given to M(greenlight.deploy.container_swap).
    type: str
    required: true
  app_dir:
    description:
      - Directory of the app; base of the default O(lock_file) and O(releases_log).
      - Default C(/opt/<app_name>).
    type: path
  upstream_file:
    description:
      - nginx upstream include file; the port it names identifies the live container.
      - Default C(/etc/nginx/greenlight/<app_name>-upstream.conf).
    type: path
  lock_file:
    description:
      - The deploy lock file. Default C(<app_dir>/deploy.lock).
    type: path
  releases_log:
    description:
      - The audit log, one JSON line per run. Default C(<app_dir>/releases.jsonl).
    type: path
  docker_socket:
    description:
      - Docker Engine API unix socket.
    type: path
    default: /var/run/docker.sock
  image_repository:
    description:
      - Repository of the app's images; its registry digest of the live image is returned first in RV(live.image_digest).
    type: str
  last:
    description:
      - Number of audit records returned in RV(last_records).
    type: int
    default: 5
notes:
  - Files in O(app_dir) that the deploy user can write are never read through a symbolic link; the module fails
    naming the file instead.
seealso:
  - module: greenlight.deploy.container_swap
"""

EXAMPLES = r"""
- name: Read the state of the app
  greenlight.deploy.container_swap_info:
    app_name: todo
  become: true
  register: todo_state

- name: Say what serves
  ansible.builtin.debug:
    msg: "{{ todo_state.live.release if todo_state.live else 'nothing' }} ({{ todo_state.condition }})"

- name: Fail when a deploy is in progress
  ansible.builtin.assert:
    that: todo_state.condition != 'locked'
"""

RETURN = r"""
app:
  description: The app name.
  returned: always
  type: str
  sample: todo
host:
  description: The server's host name.
  returned: always
  type: str
  sample: web1
condition:
  description:
    - V(locked) while a deploy, rollback or restore holds the deploy lock (RV(lock) says who and in which phase;
      a finished deploy's background stop of its old release, phase C(stop_old), does not count),
      else V(failed) when the last deploy, rollback or restore recorded a failure (RV(live) is what serves, usually
      the release from before), else V(live) when a release serves, else V(none).
  returned: always
  type: str
  choices: [locked, failed, live, none]
  sample: live
upstream_port:
  description: The port the nginx upstream file names (null when the file is absent or names no local server).
  returned: always
  type: int
  sample: 8001
maintenance:
  description: Whether nginx answers with the maintenance page (C(deploy.sh maintenance on), C(playbooks/maintenance.yml)).
  returned: always
  type: bool
  sample: false
live:
  description: The live release, null when none serves.
  returned: always
  type: dict
  contains:
    release:
      description: Release id.
      type: str
    image:
      description: Image reference it was deployed from.
      type: str
    container:
      description: Container name.
      type: str
    state:
      description: Docker state of the container.
      type: str
    port:
      description: Host port on 127.0.0.1.
      type: str
    image_id:
      description: Local image id.
      type: str
    image_digest:
      description: Registry digest of the image, null when it has none.
      type: str
    since:
      description: When the container was created (UTC).
      type: str
  sample: {release: v2, image: "registry.example.com/todo:v2", container: todo-web-v2-1a2b3c, state: running,
           port: "8002", image_id: "sha256:4f1e...", image_digest: "registry.example.com/todo@sha256:9c1d...",
           since: "2026-11-29T21:00:00Z"}
kept:
  description: Every other web container (kept for rollback, or leftovers), with release, image, container, state, port.
  returned: always
  type: list
  elements: dict
  sample: [{release: v1, image: "registry.example.com/todo:v1", container: todo-web-v1-0a9f8e, state: exited,
            port: "8001"}]
lock:
  description: The deploy lock's holder (pid, user, action, release, phase, since), null when the lock is free.
  returned: always
  type: dict
  sample: {pid: 4242, user: deploy, action: deploy, release: v3, phase: health, since: "2026-11-29T21:05:00Z"}
releases_log:
  description: Path of the audit log.
  returned: always
  type: str
  sample: /opt/todo/releases.jsonl
last_deploy:
  description: The newest audit record of a deploy, rollback or restore (not of a one-off command or maintenance
    switch), null when there is none.
  returned: always
  type: dict
  sample: {time: "2026-11-29T21:00:00.000000Z", action: deploy, result: ok, release: v2, previous_release: v1}
last_records:
  description: The newest O(last) audit records, oldest first.
  returned: always
  type: list
  elements: dict
  sample: [{time: "2026-11-29T21:00:00.000000Z", action: deploy, result: ok, release: v2, previous_release: v1}]
"""

import socket

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.greenlight.deploy.plugins.module_utils._engine.docker_api import DockerError
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.errors import SwapError, UnsafePathError
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.options import options_from_dict
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.schema import BY_NAME
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.state import status

# The options this module shares with container_swap, with the same types and defaults.
SHARED = ("app_name", "app_dir", "upstream_file", "lock_file", "releases_log", "docker_socket")


def argument_spec() -> dict:
    spec = {name: BY_NAME[name].spec() for name in SHARED}
    spec["image_repository"] = {"type": "str"}
    spec["last"] = {"type": "int", "default": 5}
    return spec


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    try:
        opts = options_from_dict(dict({name: params[name] for name in SHARED}, mode="rollback"))
        info = status(opts, socket.gethostname(), params["image_repository"], params["last"])
    except DockerError as exc:
        module.fail_json(msg="cannot read the containers of %s: %s (is Docker running, and may this user use %s?)"
                         % (params["app_name"], exc, params["docker_socket"]))
    except UnsafePathError as exc:
        module.fail_json(msg="refusing to read the state of %s: %s" % (params["app_name"], exc))
    except (SwapError, OSError) as exc:
        module.fail_json(msg="cannot read the state of %s: %s" % (params["app_name"], exc))
    module.exit_json(changed=False, **info)


if __name__ == "__main__":
    main()
