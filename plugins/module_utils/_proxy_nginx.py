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

import http.client
import json
import os
import re
import shlex
import subprocess
import tempfile
import time
import typing as t
from urllib.parse import urlsplit

UPSTREAM_RE = re.compile(r"^\s*server\s+127\.0\.0\.1:(\d+)\s*[^;]*;", re.MULTILINE)


class ProxyError(Exception):
    """The proxy could not be switched or verified."""


class ProxyReloadError(ProxyError):
    """The test passed, the reload failed. `restored`: the upstream file holds its previous
    content again; `reloaded`: nginx was then reloaded successfully with the file as it is now;
    `file_port`: the port the file names now. When `uncertain`, nginx may be routing to either
    port (a reload command that failed may still have signalled nginx), so the caller must stop
    or remove neither release."""

    def __init__(self, message: str, restored: bool, reloaded: bool, file_port: int | None) -> None:
        super().__init__(message)
        self.restored = restored
        self.reloaded = reloaded
        self.file_port = file_port

    @property
    def uncertain(self) -> bool:
        return not (self.restored and self.reloaded)


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


def as_argv(command: t.Union[str, t.Sequence[str]]) -> list[str]:
    """Commands are argv lists; a string is split like a shell would split it (no shell runs)."""
    if isinstance(command, str):
        return shlex.split(command)
    return [str(part) for part in command]


def run_command(command: t.Union[str, t.Sequence[str]], what: str, timeout: float = 60.0) -> str:
    argv = as_argv(command)
    if not argv:
        raise ProxyError("%s command is empty" % what)
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                              check=False, close_fds=True)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProxyError("%s command %s failed: %s" % (what, shlex.join(argv), exc)) from exc
    output = proc.stdout.decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        raise ProxyError("%s command %s exited %d: %s" % (what, shlex.join(argv), proc.returncode, output))
    return output


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


def fetch_release(url: str, timeout: float = 5.0) -> tuple[int, str | None]:
    """GET a 127.0.0.1 URL; return (status, release) from X-Release or a JSON "release" field."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost"):
        raise ValueError("verify URLs must be http://127.0.0.1:<port>/..., got %r" % url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        conn.request("GET", target, headers={"Connection": "close", "User-Agent": "greenlight-swap"})
        response = conn.getresponse()
        body = response.read(65536)
        release = response.getheader("X-Release")
        if release is None and "json" in (response.getheader("Content-Type") or ""):
            try:
                release = json.loads(body.decode("utf-8")).get("release")
            except (ValueError, AttributeError):
                release = None
        return response.status, release
    finally:
        conn.close()


def verify(url: str, expected_release: str | None, accepted_statuses: t.Sequence[int], timeout: float,
           interval: float = 0.1, consecutive: int = 3) -> dict[str, t.Any]:
    """Poll `url` through the proxy until it answers an accepted status (from `expected_release`)
    `consecutive` times in a row: right after a reload some connections may still reach workers
    that have the old upstream, so one good answer proves little."""
    deadline = time.monotonic() + timeout
    attempts = 0
    good = 0
    last = "no answer"
    while True:
        attempts += 1
        try:
            status, release = fetch_release(url, timeout=min(5.0, max(0.5, timeout)))
            if status in accepted_statuses and (expected_release is None or release == expected_release):
                good += 1
                if good >= consecutive:
                    return {"attempts": attempts, "status": status, "release": release}
                time.sleep(interval)
                continue
            good = 0
            last = "HTTP %d from release %s" % (status, release)
        except (OSError, http.client.HTTPException) as exc:
            good = 0
            last = "%s: %s" % (type(exc).__name__, exc)
        if time.monotonic() >= deadline:
            raise ProxyError("verify through the proxy at %s failed after %d attempts: last answer %s, expected "
                             "release %s" % (url, attempts, last, expected_release))
        time.sleep(interval)


# Drain: wait until the proxy holds no connection to the old release
# --------------------------------------------------------------------------------------------
TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
TCP_ESTABLISHED = "01"
TCP_SYN_SENT = "02"
NGINX_SHUTTING_DOWN = b"nginx: worker process is shutting down"


def _port_of(address: str) -> int:
    """The port of a /proc/net/tcp address field such as 0100007F:1F41."""
    return int(address.rsplit(":", 1)[1], 16)


def connections_to_port(port: int, tables: t.Sequence[str] = TCP_TABLES) -> int:
    """Open TCP connections of this network namespace to or from a local port: the proxy's
    (ESTABLISHED or SYN_SENT towards the port) and the accepting side's (ESTABLISHED on it)."""
    count = 0
    for table in tables:
        try:
            with open(table, encoding="ascii") as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) < 4:
                continue
            try:
                local, remote = _port_of(fields[1]), _port_of(fields[2])
            except (IndexError, ValueError):
                continue
            state = fields[3]
            if (remote == port and state in (TCP_ESTABLISHED, TCP_SYN_SENT)) or \
                    (local == port and state == TCP_ESTABLISHED):
                count += 1
    return count


def nginx_workers_shutting_down(proc: str = "/proc") -> int:
    """nginx workers told to quit by a reload that still finish requests (they exit when done)."""
    count = 0
    try:
        entries = os.listdir(proc)
    except OSError:
        return 0
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc, entry, "cmdline"), "rb") as handle:
                if handle.read(len(NGINX_SHUTTING_DOWN)) == NGINX_SHUTTING_DOWN:
                    count += 1
        except OSError:
            continue
    return count


def wait_drained(port: int | None, max_seconds: float, min_seconds: float = 0.5, interval: float = 0.05,
                 tables: t.Sequence[str] = TCP_TABLES, proc: str = "/proc") -> dict[str, t.Any]:
    """After a graceful reload, wait until nothing can still reach the old release: no TCP
    connection to its port and no nginx worker still shutting down, but at least `min_seconds`
    (nginx tells its old workers to quit ~0.1 s after the reload; a request they accepted
    before that opens its upstream connection a moment later) and at most `max_seconds`."""
    started = time.monotonic()
    floor = min(min_seconds, max_seconds)
    while True:
        elapsed = time.monotonic() - started
        connections = connections_to_port(port, tables) if port else 0
        workers = nginx_workers_shutting_down(proc)
        idle = connections == 0 and workers == 0
        if (idle and elapsed >= floor) or elapsed >= max_seconds:
            return {"seconds": round(elapsed, 3), "idle": idle, "connections": connections,
                    "workers_shutting_down": workers}
        time.sleep(min(interval, max(0.0, max_seconds - elapsed)))
