# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Point the nginx upstream of an app at one local port, atomically, standard library only.

The upstream file holds exactly one line, ``server 127.0.0.1:<port>;``, and is included from
``upstream <app>_live { include <file>; keepalive 32; }``. Switching means: write a temp file
beside it, rename it over the real name (atomic on POSIX), run the test command (nginx reads
the real include path, so the test sees the new content), restore the old content if the test
fails, then reload gracefully (old workers finish in-flight requests). If the reload fails, the
old content is put back and reloaded (best effort): the file never names a port nginx was not
told about, so the next run cannot mistake it for the live release (see ProxyReloadError).
"""

from __future__ import annotations

import os
import re
import tempfile
import typing as t

from .commands import run_command
from .errors import ProxyError, ProxyReloadError

UPSTREAM_RE = re.compile(r"^\s*server\s+127\.0\.0\.1:(\d+)\s*[^;]*;", re.MULTILINE)


def render_upstream(port: int) -> str:
    """The whole content of the upstream include file for a live port."""
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ValueError("upstream port must be an integer 1-65535, got %r" % (port,))
    return "server 127.0.0.1:%d;\n" % port


def parse_upstream(content: str) -> int | None:
    """The port the upstream file points at, or None when it names no local server."""
    match = UPSTREAM_RE.search(content or "")
    return int(match.group(1)) if match else None


def read_upstream_port(path: str) -> int | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return parse_upstream(handle.read())
    except FileNotFoundError:
        return None


def _write_atomic(path: str, content: str) -> None:
    directory = os.path.dirname(path) or "."
    mode = 0o644
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        pass
    fd, tmp_path = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_path, mode)
        os.rename(tmp_path, path)
    except BaseException:
        try:
            os.unlink(tmp_path)
        except FileNotFoundError:
            pass
        raise
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def switch_upstream(
    path: str,
    port: int,
    test_command: t.Union[str, t.Sequence[str], None] = "nginx -t",
    reload_command: t.Union[str, t.Sequence[str], None] = "nginx -s reload",
    command_timeout: float = 60.0,
    restore_on_reload_failure: bool = True,
) -> dict[str, t.Any]:
    """Point the upstream file at `port`, test and reload. Restores the old file if the test
    fails; if the reload fails, restores it and reloads again (ProxyReloadError says how that
    went). With restore_on_reload_failure=False (switching back to a known-good port) the new
    file stays and ProxyReloadError says nginx may not have read it."""
    new_content = render_upstream(port)
    try:
        with open(path, encoding="utf-8") as handle:
            old_content: str | None = handle.read()
    except FileNotFoundError:
        old_content = None
    parent = os.path.dirname(path)
    if parent and not os.path.isdir(parent):
        os.makedirs(parent, mode=0o755, exist_ok=True)
    _write_atomic(path, new_content)
    if test_command:
        try:
            run_command(test_command, "proxy test", command_timeout)
        except ProxyError:
            if old_content is None:
                os.unlink(path)
            else:
                _write_atomic(path, old_content)
            raise
    if reload_command:
        try:
            run_command(reload_command, "proxy reload", command_timeout)
        except ProxyError as exc:
            raise _reload_failed(exc, path, port, old_content, reload_command, command_timeout,
                                 restore_on_reload_failure) from exc
    return {"previous_port": parse_upstream(old_content or ""), "port": port,
            "content_changed": old_content != new_content}


def _reload_failed(error: ProxyError, path: str, port: int, old_content: str | None,
                   reload_command: t.Union[str, t.Sequence[str]], command_timeout: float,
                   restore: bool) -> ProxyReloadError:
    """After a failed reload: put the previous file back and reload it, best effort."""
    if not restore:
        return ProxyReloadError("%s; the upstream file names 127.0.0.1:%d, but nginx may not have read it"
                                % (error, port), restored=False, reloaded=False, file_port=port)
    previous_port = parse_upstream(old_content or "")
    try:
        if old_content is None:
            os.unlink(path)
        else:
            _write_atomic(path, old_content)
    except OSError as restore_error:
        return ProxyReloadError("%s; could not put the previous upstream file back (%s): it names 127.0.0.1:%d"
                                % (error, restore_error, port), restored=False, reloaded=False, file_port=port)
    where = "127.0.0.1:%d" % previous_port if previous_port else "no server"
    try:
        run_command(reload_command, "proxy reload", command_timeout)
    except ProxyError as again:
        return ProxyReloadError("%s; put the previous upstream file back (%s); reloading nginx with it failed too: %s"
                                % (error, where, again), restored=True, reloaded=False, file_port=previous_port)
    return ProxyReloadError("%s; put the previous upstream file back (%s) and reloaded nginx with it"
                            % (error, where), restored=True, reloaded=True, file_port=previous_port)


# --------------------------------------------------------------------------------------------
# Maintenance mode: a second include of the app's server block (roles/proxy site.conf.j2), beside
# the upstream file. On, nginx answers every request with 503 and the maintenance page
# (error_page to the named location @greenlight_maintenance, Retry-After), except requests from
# 127.0.0.1 that carry the header X-Greenlight-Probe: 1 (the engine's check through nginx after a
# switch, so a deploy during maintenance still verifies its release, and maintenance stays on).
# --------------------------------------------------------------------------------------------
MAINTENANCE_MARK = "# greenlight maintenance: on"
PROBE_HEADER = "X-Greenlight-Probe"


def maintenance_file(upstream_file: str, app_name: str) -> str:
    """The maintenance include of an app: <upstream file's directory>/<app>-maintenance.conf."""
    return os.path.join(os.path.dirname(upstream_file) or ".", "%s-maintenance.conf" % app_name)


def bypass_variable(app_name: str) -> str:
    """The nginx variable (a map in site.conf.j2) that is 1 for the engine's own probe."""
    return "$greenlight_maintenance_bypass_%s" % app_name.replace("-", "_")


def render_maintenance(app_name: str, on: bool, since: str = "") -> str:
    if not on:
        return "# greenlight maintenance: off (deploy.sh maintenance on starts it)\n"
    return ("%s since %s (deploy.sh maintenance off ends it)\n"
            "error_page 503 @greenlight_maintenance;\n"
            "if (%s = 0) {\n    return 503;\n}\n" % (MAINTENANCE_MARK, since, bypass_variable(app_name)))


def maintenance_on(path: str) -> bool:
    """Whether the maintenance include says on (absent: off)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().startswith(MAINTENANCE_MARK)
    except FileNotFoundError:
        return False


def switch_maintenance(path: str, app_name: str, on: bool, since: str,
                       test_command: t.Union[str, t.Sequence[str], None] = "nginx -t",
                       reload_command: t.Union[str, t.Sequence[str], None] = "nginx -s reload",
                       command_timeout: float = 60.0) -> bool:
    """Write the maintenance include, test, reload gracefully (requests in flight finish on the old
    workers). The old content is put back when the test or the reload fails. Returns whether the
    file changed (False: it already said so; nginx is reloaded all the same, it may not have read it)."""
    try:
        with open(path, encoding="utf-8") as handle:
            old_content: str | None = handle.read()
    except FileNotFoundError:
        raise ProxyError("%s does not exist: the nginx site of %s has no maintenance include yet; re-run "
                         "playbooks/setup.yml (role greenlight.deploy.proxy)" % (path, app_name)) from None
    changed = old_content is None or old_content.startswith(MAINTENANCE_MARK) != on
    new_content = render_maintenance(app_name, on, since) if changed else old_content
    _write_atomic(path, new_content)
    try:
        if test_command:
            run_command(test_command, "proxy test", command_timeout)
        if reload_command:
            run_command(reload_command, "proxy reload", command_timeout)
    except ProxyError:
        _write_atomic(path, old_content)
        if reload_command:
            try:
                run_command(reload_command, "proxy reload", command_timeout)
            except ProxyError:
                pass
        raise
    return changed
