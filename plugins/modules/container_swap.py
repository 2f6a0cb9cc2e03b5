#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: container_swap
short_description: Put a Docker image live on a server with zero downtime
version_added: 0.1.0
description:
  - Replaces the running release of a web application with a new image without dropping a request.
  - "Phases: plan, lock, cleanup, snapshot, pre-switch commands, static copy, start the new container beside the
    old one, health gate, atomic nginx upstream switch, drain, other services, prune, record; the old release is
    stopped in the background (RV(stopping_old)), by a process that holds the deploy lock until it is stopped."
  - Every failure before the switch leaves the previous release serving exactly as before; the new container is
    removed and the database snapshot optionally restored.
  - Re-running an identical deploy (same image id, same configuration, same release id) changes nothing.
  - Every run that changes something (or fails) appends one JSON line to O(releases_log).
  - The image must already be on the server (pull it first, for example with M(community.docker.docker_image_pull)).
    The module never handles registry credentials.
  - Talks to the Docker Engine API over its unix socket with the Python standard library only;
    the server needs python3 and Docker, nothing else.
  - The options are checked on the controller with the engine's own rules (its action plugin) before anything is
    sent to the server; the same check runs again on the server.
  - When pipelining is on and the play has the deploy settings of the role C(greenlight.deploy.deploy_script)
    (C(deploy_script_install_dir)), the action plugin runs the engine that role installed on the server
    (C(<deploy_script_install_dir>/greenlight.zip), only if its SHA-256 is this collection's engine's) in one
    C(/usr/bin/python3) process with the options on stdin, instead of sending this module; otherwise the module
    is sent. The result is the same.
  - See C(docs/container_swap.md) in the collection for the full contract.
author:
  - greenlight.deploy contributors (@greenlight)
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Predicts the action and the steps without taking the lock or writing O(releases_log).
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details: Before and after of release, image, image id, digest, port and container name. Never env values.
options:
  app_name:
    description:
      - Name of the application; used in container names, labels and default paths.
      - Must match C(^[a-z0-9][a-z0-9_-]*$).
    type: str
    required: true
  image:
    description:
      - Image reference to deploy (C(name:tag), C(name@sha256:...), or an image id C(sha256:...)).
      - Required when O(mode=deploy) or O(mode=prepare); not allowed with O(mode=rollback), O(mode=restore) or
        O(mode=recreate).
    type: str
  mode:
    description:
      - V(deploy) puts O(image) live.
      - V(rollback) puts a kept (stopped) earlier release live again through the same health-gated switch.
      - V(prepare) changes nothing that serves - it fails fast when another deploy holds the lock, pulls O(image)
        with O(docker_config), and returns RV(noop) (whether a swap would change anything).
      - V(restore) puts back the database snapshot taken when O(release) (default the live release; it must be live,
        so roll back to it first) was replaced - the database as that release left it; writes made since are lost.
        The database as it is now is kept first (RV(safety_snapshot)). Needs O(sqlite_path).
      - V(recreate) re-creates the live release's containers (web through the same health-gated swap, services)
        from its image with the current env file and options, without snapshot or pre-switch commands (its
        migrations already ran); changes nothing when they already run with them. For example after a secret
        in O(env_file) changed.
    type: str
    choices: [deploy, rollback, prepare, restore, recreate]
    default: deploy
  rollback_release:
    description:
      - Release id to roll back to with O(mode=rollback). Default is the most recent kept release other than the live one.
    type: str
  release:
    description:
      - Release id recorded in labels and the audit log.
      - Default is the image tag; for C(latest), no tag or a digest, the first 12 hex digits of the digest or image id.
      - A different release id of the same image counts as a change.
      - With O(mode=restore), the release whose database snapshot is put back (default the live one).
      - Not allowed with O(mode=recreate).
    type: str
  app_dir:
    description:
      - Directory of the app on the server; default C(/opt/<app_name>). Base of the default lock, log and backup paths.
    type: path
  env_file:
    description:
      - Env file passed to every container of the app, parsed like C(docker run --env-file).
      - Only its sha256 goes into the config hash label; values are never returned or logged.
    type: path
  mounts:
    description:
      - Bind mounts or volumes C(host:container[:ro|rw]) for all containers of the app (web, services, pre-switch).
    type: list
    elements: str
    default: []
  container_port:
    description:
      - Port the app listens on inside the container.
    type: int
    default: 8000
  host_ports:
    description:
      - The blue/green pair of host ports on 127.0.0.1; the new container takes the one the live container does not use.
    type: list
    elements: int
    default: [8001, 8002]
  health_path:
    description:
      - Path polled on the new container before the switch.
      - A URL path with an optional query (no spaces, C(#) or control characters), checked before anything runs.
    type: str
    default: /health
  health_timeout:
    description:
      - Seconds the new container has to answer O(health_path) with an accepted status.
    type: float
    default: 60
  health_interval:
    description:
      - Seconds between health attempts.
    type: float
    default: 0.25
  health_statuses:
    description:
      - HTTP statuses that count as healthy (also used to verify through the proxy).
    type: list
    elements: int
    default: [200]
  pre_switch_commands:
    description:
      - Commands run one after another in one-off containers of the new image (with O(env_file) and O(mounts))
        before the new web container starts, for example V(python manage.py migrate --noinput).
      - Each is an argv list or a string split like a shell would (no shell runs). A non-zero exit stops the deploy.
    type: list
    elements: raw
    default: []
  pre_switch_timeout:
    description:
      - Seconds each pre-switch command may run.
    type: float
    default: 600
  static_source:
    description:
      - Directory inside the image (for example C(/app/static)) copied into O(static_root) before the switch.
      - New and changed files are written, files of earlier releases are kept.
    type: str
  static_root:
    description:
      - Host directory served by nginx for static files. Default C(/var/www/<app_name>/static) when O(static_source) is set.
    type: path
  sqlite_path:
    description:
      - Host path of a SQLite database to snapshot (sqlite3 online backup API) into O(backups_dir) before the
        pre-switch commands run. Skipped when the file does not exist yet.
    type: path
  restore_on_failure:
    description:
      - Restore the snapshot when the deploy fails after the pre-switch commands started and before the switch.
      - Writes the live release made between the snapshot and the failure are lost.
    type: bool
    default: true
  backups_dir:
    description:
      - Directory for database snapshots; default C(<app_dir>/backups).
    type: path
  backups_to_keep:
    description:
      - Number of snapshots kept; older ones are deleted after a successful deploy.
    type: int
    default: 5
  upstream_file:
    description:
      - The nginx upstream include file; holds exactly one line C(server 127.0.0.1:<port>;).
      - Default C(/etc/nginx/greenlight/<app_name>-upstream.conf). The port it names identifies the live container.
    type: path
  proxy_test_command:
    description:
      - Command run after the new upstream file is in place; on failure the old file is restored and the deploy fails.
      - An argv list or a string. Empty to skip.
    type: raw
    default: nginx -t
  proxy_reload_command:
    description:
      - Command that makes the proxy read the new upstream gracefully. An argv list or a string.
    type: raw
    default: nginx -s reload
  proxy_verify_url:
    description:
      - Optional C(http://127.0.0.1:<port>/<path>) fetched through the proxy after the switch until it answers from the
        new release (its C(X-Release) header or JSON C(release) equals what the new container reported directly).
      - If it does not within O(proxy_verify_timeout), the proxy is switched back to the previous container.
    type: str
  proxy_verify_timeout:
    description:
      - Seconds to wait for O(proxy_verify_url) to answer from the new release.
    type: float
    default: 10
  drain_seconds:
    description:
      - Longest wait after the switch before the old container is stopped, so requests the proxy already sent
        to it finish.
      - With O(drain_until_idle=true) the drain usually ends well before this bound; with
        O(drain_until_idle=false) it is a fixed wait.
    type: float
    default: 30
  drain_until_idle:
    description:
      - End the drain as soon as nothing can still reach the old container, at least 0.5 seconds after the
        switch - no TCP connection to its port is open in the server's network namespace and no nginx
        worker is still shutting down after the reload (nginx's old workers exit once their in-flight
        requests are answered).
      - Set to V(false) when the proxy runs in another network namespace (a containerized nginx, a load
        balancer on another host). This server cannot see the proxy's connections then, so only the fixed
        O(drain_seconds) wait is safe.
    type: bool
    default: true
  stop_grace_seconds:
    description:
      - Seconds between SIGTERM and SIGKILL when stopping a container.
    type: int
    default: 10
  releases_to_keep:
    description:
      - Number of earlier releases whose stopped web containers are kept for rollback; older ones are removed,
        and with them their images when no other container uses them (see RV(pruned_images)).
    type: int
    default: 3
  lock_file:
    description:
      - File locked with flock(2) during the swap; default C(<app_dir>/deploy.lock). Holds the holder's details.
      - The kernel frees the lock when the holder dies, so it cannot go stale.
    type: path
  lock_timeout:
    description:
      - Seconds to wait for another deploy of the same app to finish before failing with the holder's details.
    type: float
    default: 60
  releases_log:
    description:
      - Audit log, one JSON line per changing or failed run; default C(<app_dir>/releases.jsonl).
    type: path
  services:
    description:
      - Other services run from the same image, replaced after the web container is live.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description:
          - Service name (label C(greenlight.service)); must match C(^[a-z0-9][a-z0-9_-]*$), not C(web).
        type: str
        required: true
      command:
        description:
          - Command of the service, an argv list or a string.
        type: raw
        required: true
      singleton:
        description:
          - V(true) stops the old container before the new one starts (never two at once, for example a scheduler).
          - V(false) starts the new one first, then stops the old one.
        type: bool
        default: false
  labels:
    description:
      - Extra labels on every container. Keys starting with C(greenlight.) are reserved.
    type: dict
    default: {}
  restart_policy:
    description:
      - Docker restart policy of the web and service containers.
    type: str
    choices: ['no', always, unless-stopped, on-failure]
    default: unless-stopped
  docker_socket:
    description:
      - Docker Engine API unix socket.
    type: path
    default: /var/run/docker.sock
  actor:
    description:
      - Free text recorded as C(actor.by) in the audit line, for example a CI job URL.
    type: str
  docker_config:
    description:
      - O(mode=prepare) only - the Docker client directory (C(DOCKER_CONFIG)) the pull uses, the registry login's.
    type: path
notes:
  - One call per server per deploy. Run it with C(serial) or C(throttle) across a fleet as you see fit.
  - Does not pull images (except O(mode=prepare), with the registry login of O(docker_config)) and never sees registry credentials.
seealso:
  - module: community.docker.docker_image_pull
"""

EXAMPLES = r"""
- name: Deploy the to-do app
  greenlight.deploy.container_swap:
    app_name: todo
    image: registry.greenlight.test:5000/greenlight/todo:v2
    env_file: /opt/todo/todo.env
    mounts:
      - /opt/todo/data:/data
    sqlite_path: /opt/todo/data/db.sqlite3
    pre_switch_commands:
      - python manage.py migrate --noinput
    static_source: /app/static
    proxy_verify_url: http://127.0.0.1/health
    services:
      - name: worker
        command: python manage.py run_worker
  register: __deploy

- name: Roll back to the previous kept release
  greenlight.deploy.container_swap:
    app_name: todo
    mode: rollback
    env_file: /opt/todo/todo.env
    mounts:
      - /opt/todo/data:/data

- name: Roll back to a named release
  greenlight.deploy.container_swap:
    app_name: todo
    mode: rollback
    rollback_release: v1
    env_file: /opt/todo/todo.env
    mounts:
      - /opt/todo/data:/data
"""

RETURN = r"""
switched:
  description: True when this run moved traffic to a new container and it stays there.
  returned: always
  type: bool
live_release:
  description:
    - The release nginx serves when the module returns, as the engine reads it from the server (V(unknown) when it
      cannot tell), or V(null) when nothing serves the app.
  returned: always
  type: str
  sample: v2
outcome:
  description:
    - One record of what the run did, with the same keys in every mode and on failure.
  returned: always
  type: dict
  contains:
    state:
      description: What happened.
      type: str
      choices: [deployed, unchanged, rolled-back, would-deploy, would-pull, failed, recreated, prepared, restored,
                would-recreate, would-restore]
    action:
      description: What the run did or would do (as RV(swap_action)).
      type: str
    phase:
      description: The phase that failed, or V(null).
      type: str
    release:
      description: Release put (or to be put) live.
      type: str
    previous:
      description: Release that was live before the run.
      type: str
    live:
      description: Release live when the module returned (as RV(live_release)).
      type: str
    image:
      description: Image reference of the release.
      type: str
    digest:
      description: Repo digest of the image, if it has one.
      type: str
    phases:
      description: Seconds spent in each phase that ran (as RV(phases)).
      type: dict
    switched:
      description: As RV(switched).
      type: bool
    message:
      description: One line for humans, secrets redacted.
      type: str
    progress:
      description:
        - On failure, how far the failed phase got, one line (as RV(progress)), e.g. which pre-switch command ran
          or how many health attempts were made; V(null) when the run did not fail.
      type: str
  sample: {state: deployed, action: deploy, phase: null, release: v2, previous: v1, live: v2,
           image: "registry.greenlight.test:5000/greenlight/todo:v2", digest: "sha256:...",
           phases: {plan: 0.02, switch: 0.1}, switched: true, message: "v2 is live on web1 (was v1)", progress: null}
noop:
  description: O(mode=prepare) - a swap of this image would change nothing.
  returned: success and O(mode=prepare)
  type: bool
swap_action:
  description:
    - What the run did or would do (called C(action) in the audit line; renamed here because Ansible reserves
      C(action) in task results).
  returned: always
  type: str
  sample: deploy
  choices: [deploy, rollback, config-change]
release:
  description: Release id that is (or would be) live.
  returned: success
  type: str
  sample: v2
previous_release:
  description: Release that was live before this run, if any.
  returned: success
  type: str
  sample: v1
image:
  description: Image reference deployed.
  returned: success
  type: str
  sample: greenlight/todo:v2
image_id:
  description: Image id deployed.
  returned: success
  type: str
  sample: sha256:b293bf28e22e...
image_digest:
  description: First repo digest of the image, if it has one.
  returned: success
  type: str
  sample: registry.greenlight.test:5000/greenlight/todo@sha256:...
live_port:
  description: Host port on 127.0.0.1 that the proxy sends traffic to.
  returned: success
  type: int
  sample: 8002
container_id:
  description: Id of the live web container.
  returned: success
  type: str
container_name:
  description: Name of the live web container (C(<app>-web-<release>-<random>)).
  returned: success
  type: str
  sample: todo-web-v2-3fa9c1
services:
  description: Names of the service containers now running.
  returned: success
  type: list
  elements: str
phases:
  description: Seconds spent in each phase that ran.
  returned: always
  type: dict
  sample: {plan: 0.02, lock: 0.01, pre_switch: 2.1, start: 0.3, health: 1.6, switch: 0.1, drain: 5.0}
drain:
  description:
    - How the drain before stopping the old container ended. V(idle) is V(true) when nothing reached the old
      container any more, V(false) when O(drain_seconds) ran out first, V(null) for a fixed drain.
  returned: when an old container was drained
  type: dict
  sample: {seconds: 0.61, idle: true, connections: 0, workers_shutting_down: 0}
proxy_verified:
  description:
    - What O(proxy_verify_url) answered in this run - after a swap, the answers from the new release
      that ended the verification; otherwise (nothing to swap) one request that got an accepted status.
    - Absent in check mode, without O(proxy_verify_url), or when the proxy did not answer an accepted status
      on a run that swapped nothing (the run does not fail for it; callers check the proxy themselves).
  returned: when the proxy answered
  type: dict
  sample: {url: "http://127.0.0.1/health", status: 200, release: "3f2c1ab", attempts: 3}
phase_log:
  description:
    - Each phase that ran to its end, in order, with the UTC time it started and its seconds (also in the
      audit line; what C(deploy.sh) shows live).
  returned: when a phase ran to its end
  type: list
  elements: dict
  sample: [{phase: plan, started: "2026-11-29T21:02:03.123456Z", seconds: 0.02},
           {phase: pre_switch, started: "2026-11-29T21:02:03.201234Z", seconds: 1.1}]
progress:
  description:
    - "The last phase the run entered - V(phase), V(started) (UTC), V(step) (its last step, e.g.
      C(command 1 of 2: python manage.py migrate) or C(attempt 7), or V(null)) - and
      on failure V(seconds), how long that phase ran (also in the audit line of a failure). Secrets redacted."
  returned: when a phase started
  type: dict
  sample: {phase: pre_switch, started: "2026-11-29T21:02:03.201234Z", step: "command 1 of 1: python manage.py migrate",
           seconds: 4.2}
health_attempts:
  description: Number of health requests sent to the new container.
  returned: always
  type: int
rolled_back:
  description: True when the proxy was switched back to the previous container after a failed verification.
  returned: always
  type: bool
adopted:
  description:
    - The running web container this run pointed the upstream file at because the file named a port where no
      web container ran (for example after a proxy reload that failed). It was adopted as the live release
      instead of being stopped; C(upstream_port_before) is the port the file named.
  returned: when a container was adopted
  type: dict
  sample: {container: todo-web-v1-3fa9c1, release: v1, port: 8001, upstream_port_before: 8002}
proxy_uncertain:
  description:
    - True when nginx could not be reloaded during the switch, the switch back or the cleanup, so it may be
      routing to either release. Nothing was stopped or removed; the upstream file names the previous release
      (or the adopted one), which nginx reads at its next reload or start. Repair nginx and re-run.
  returned: failure, when nginx could not be reloaded
  type: bool
failed_phase:
  description: Phase that failed.
  returned: failure
  type: str
  sample: health
error:
  description: The error of the failed phase.
  returned: failure
  type: str
snapshot:
  description: Path of the database snapshot taken by this run; with O(mode=restore), the one put back.
  returned: when a snapshot was taken or restored
  type: str
replaced_by:
  description: With O(mode=restore), the release whose deploy took the snapshot put back (it replaced O(release)).
  returned: mode restore, once the snapshot was found
  type: str
safety_snapshot:
  description: With O(mode=restore), the snapshot of the database as it was just before the restore.
  returned: mode restore, when a database existed
  type: str
pruned_images:
  description:
    - Ids of the images removed after a successful run because the release containers pruned in this run
      used them and no container left uses them. Images of kept releases (a rollback needs them), of the
      live release, of other containers or with several tags are never removed.
  returned: when the prune phase ran
  type: list
  elements: str
  sample: ["sha256:4f2a..."]
recovered_from:
  description:
    - The run that was interrupted (killed, host rebooted) while it held the deploy lock, as its lock file
      recorded it; this run converged what it left (see RV(cleaned)).
  returned: when the previous holder of the lock did not finish
  type: dict
  sample: {pid: 4242, user: root, release: v2, phase: health, since: "2026-11-22T06:27:33Z"}
stopping_old:
  description:
    - The previous release's web container is being stopped in the background - traffic had left it (drain)
      when the module returned. A detached process holds the deploy lock (lock file phase C(stop_old), its
      pid) until the container is stopped (kept for rollback), then releases it; a later deploy waits for it.
    - C(removed_after) is true when O(releases_to_keep) leaves no room for it, so it is removed once stopped.
  returned: when a swap replaced a live release
  type: dict
  sample: {container: todo-web-v1-3fa9c1, release: v1, pid: 4243, removed_after: false}
cleaned:
  description: Names of the containers an interrupted earlier run left behind and this run removed.
  returned: when the cleanup phase removed something
  type: list
  elements: str
  sample: [todo-web-v2-3fa9c1]
pre_switch_output:
  description: The last 20 lines of output of each pre-switch command, in order, with env file values redacted.
  returned: when pre-switch commands ran
  type: list
  elements: str
static_files:
  description: Files of O(static_source) copied into O(static_root) by this run, counted by what happened to them.
  returned: when static files were copied
  type: dict
  sample: {added: 12, updated: 3, unchanged: 240, skipped: 0}
health_release:
  description:
    - Release the new container reported on O(health_path) (its C(X-Release) header or JSON C(release)), if any;
      the proxy verification waits for this one.
  returned: when the health gate passed
  type: str
  sample: 3f2c1ab
pruned:
  description:
    - Names of what the prune phase removed - release containers beyond O(releases_to_keep), containers
      that were never started, and database snapshots beyond O(backups_to_keep).
  returned: when the prune phase ran
  type: list
  elements: str
restored:
  description: Whether the database snapshot was put back after the deploy failed before the switch.
  returned: failure, when the database was to be restored
  type: bool
actions:
  description: Steps the run takes (or would take in check mode).
  returned: always
  type: list
  elements: str
actor:
  description: Who ran it (user, host, pid, and the O(actor) option as C(by)); recorded in the audit line.
  returned: always
  type: dict
  sample: {user: deploy, host: web1, pid: 4242}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.greenlight.deploy.plugins.module_utils._engine.schema import argument_spec, required_if
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.errors import SwapError
from ansible_collections.greenlight.deploy.plugins.module_utils._engine.swap import run_swap


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_if=required_if(),
        supports_check_mode=True,
    )
    options = dict(module.params)
    options["check_mode"] = module.check_mode
    try:
        result = run_swap(options, background_stop=True)
    except SwapError as exc:
        partial = dict(exc.result)
        partial.pop("msg", None)
        partial["swap_action"] = partial.pop("action", None)
        if not module._diff:
            partial.pop("diff", None)
        module.fail_json(msg=str(exc), **partial)
    if not module._diff:
        result.pop("diff", None)
    result["swap_action"] = result.pop("action", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
