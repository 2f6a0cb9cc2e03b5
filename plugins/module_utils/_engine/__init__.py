# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The swap engine: put one image live on one server with zero downtime.

Standard library only, no Ansible imports. The same files run as the package ``greenlight`` on
servers (``deploy.sh``, installed by the role ``deploy_script``), so modules import each other
relatively only. Layers, bottom up (a module imports only from the layers below it):

- ``errors``, ``options`` (+ ``schema``, the option table), ``labels``, ``redact``
- infrastructure: ``paths`` (no links followed), ``audit`` (releases.jsonl), ``lock`` (deploy lock),
  ``envfile``, ``sqlite``, ``static``, ``commands``, ``http_probe``, ``docker_api``, ``registry``, ``proxy_nginx``,
  ``drain``, ``detach`` (the background process that stops the old release)
- ``state`` (the one reader of what is live), ``context`` (one run), ``result``, ``plan``, ``containers``
- the phases: ``phases_prepare`` (plan, lock, cleanup), ``phases_release`` (snapshot, pre_switch,
  static, start, health), ``phases_traffic`` (switch, drain, stop_old, switch back),
  ``phases_finish`` (services, prune, record), ``failure``
- ``prepare`` (mode prepare), ``restore`` (mode restore: a database snapshot back), ``ops`` (day-2:
  logs, one-off commands, maintenance mode)
- ``swap`` (the phase sequence, :func:`swap.run_swap`: modes deploy, rollback, recreate; dispatches
  prepare and restore), ``cli_ops`` (deploy.sh logs, run, maintenance), ``cli`` (deploy.sh),
  ``remote`` (container_swap's fast call: the action plugin runs the installed archive's engine
  without Ansible's module wrapper)
"""
