# Copyright (c) 2026 greenlight.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Minimal Docker Engine API client over the unix socket, standard library only.

It runs on servers that have python3 and Docker and nothing else, so it cannot use the docker
SDK. Only the handful of endpoints the swap engine needs are wrapped.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import struct
import typing as t
from urllib.parse import quote, urlencode

DEFAULT_SOCKET = "/var/run/docker.sock"


class DockerError(Exception):
    """An error answer from the Docker engine (or the socket could not be reached)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotFound(DockerError):
    """HTTP 404 from the engine: no such container or image."""


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.timeout is not None:
            sock.settimeout(self.timeout)
        sock.connect(self._socket_path)
        self.sock = sock


def socket_path_from_env(default: str = DEFAULT_SOCKET) -> str:
    """Honour DOCKER_HOST when it names a unix socket; the engine never speaks TCP."""
    docker_host = os.environ.get("DOCKER_HOST", "")
    if docker_host.startswith("unix://"):
        return docker_host[len("unix://"):]
    return default


def demux_logs(raw: bytes) -> str:
    """Decode a non-TTY log stream (8-byte frame headers) into text; pass TTY streams through."""
    out = []
    pos = 0
    while pos + 8 <= len(raw) and raw[pos] in (0, 1, 2) and raw[pos + 1:pos + 4] == b"\x00\x00\x00":
        (size,) = struct.unpack(">I", raw[pos + 4:pos + 8])
        out.append(raw[pos + 8:pos + 8 + size])
        pos += 8 + size
    if pos == 0:
        return raw.decode("utf-8", "replace")
    out.append(raw[pos:])
    return b"".join(out).decode("utf-8", "replace")


class DockerClient:
    """A few Docker Engine API calls; each call opens its own short connection."""

    def __init__(self, socket_path: str = DEFAULT_SOCKET, timeout: float = 60.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    # -- transport ---------------------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        query: dict[str, t.Any] | None = None,
        body: t.Any = None,
        timeout: float | None = None,
        stream: bool = False,
    ) -> tuple[http.client.HTTPResponse, _UnixHTTPConnection]:
        if query:
            path = path + "?" + urlencode({k: v for k, v in query.items() if v is not None})
        headers = {"Host": "docker"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        conn = _UnixHTTPConnection(self.socket_path, timeout if timeout is not None else self.timeout)
        try:
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise DockerError("cannot talk to the Docker engine at %s: %s" % (self.socket_path, exc)) from exc
        if response.status >= 400:
            data = response.read()
            conn.close()
            try:
                message = json.loads(data.decode("utf-8")).get("message", "")
            except ValueError:
                message = data.decode("utf-8", "replace")
            error_class = NotFound if response.status == 404 else DockerError
            raise error_class("%s %s: %s (HTTP %d)" % (method, path.split("?")[0], message.strip(), response.status),
                              status=response.status)
        return response, conn

    def _call(self, method: str, path: str, query: dict[str, t.Any] | None = None, body: t.Any = None,
              timeout: float | None = None) -> t.Any:
        response, conn = self._request(method, path, query=query, body=body, timeout=timeout)
        try:
            data = response.read()
        finally:
            conn.close()
        if not data:
            return None
        if response.getheader("Content-Type", "").startswith("application/json"):
            return json.loads(data.decode("utf-8"))
        return data

    # -- system ------------------------------------------------------------------------------
    def ping(self) -> bool:
        return self._call("GET", "/_ping") in (b"OK", "OK")

    # -- images ------------------------------------------------------------------------------
    def inspect_image(self, reference: str) -> dict[str, t.Any]:
        return self._call("GET", "/images/%s/json" % quote(reference, safe=":@/"))

    def remove_image(self, image: str) -> None:
        """`docker rmi` without force, by id: the engine answers 409 while any container uses the
        image or when it is tagged in several repositories (raised as DockerError with status 409),
        404 when it is gone; several tags of one repository are all removed with it."""
        self._call("DELETE", "/images/%s" % quote(image, safe=":@/"), query={"force": "0", "noprune": "0"})

    # -- containers --------------------------------------------------------------------------
    def list_containers(self, labels: dict[str, str] | None = None, all: bool = True) -> list[dict[str, t.Any]]:
        filters = {}
        if labels:
            filters["label"] = ["%s=%s" % (k, v) for k, v in sorted(labels.items())]
        query = {"all": "1" if all else "0"}
        if filters:
            query["filters"] = json.dumps(filters)
        return self._call("GET", "/containers/json", query=query) or []

    def inspect_container(self, container: str) -> dict[str, t.Any]:
        return self._call("GET", "/containers/%s/json" % quote(container, safe=""))

    def create_container(self, name: str, config: dict[str, t.Any]) -> str:
        result = self._call("POST", "/containers/create", query={"name": name}, body=config)
        return result["Id"]

    def start_container(self, container: str) -> None:
        self._call("POST", "/containers/%s/start" % quote(container, safe=""))

    def stop_container(self, container: str, grace_seconds: int) -> None:
        # The engine answers 304 when the container is already stopped; that is fine.
        self._call("POST", "/containers/%s/stop" % quote(container, safe=""), query={"t": str(int(grace_seconds))},
                   timeout=self.timeout + grace_seconds)

    def remove_container(self, container: str, force: bool = True) -> None:
        try:
            self._call("DELETE", "/containers/%s" % quote(container, safe=""),
                       query={"force": "1" if force else "0", "v": "1"})
        except NotFound:
            pass

    def wait_container(self, container: str, timeout: float) -> int:
        result = self._call("POST", "/containers/%s/wait" % quote(container, safe=""), timeout=timeout)
        return int(result.get("StatusCode", -1))

    def container_logs(self, container: str, tail: int = 50) -> str:
        data = self._call("GET", "/containers/%s/logs" % quote(container, safe=""),
                          query={"stdout": "1", "stderr": "1", "tail": str(tail)})
        if data is None:
            return ""
        if isinstance(data, bytes):
            return demux_logs(data)
        return str(data)

    def stream_logs(self, container: str, tail: t.Union[int, str] = "all", since: int | None = None,
                    follow: bool = False) -> tuple[http.client.HTTPResponse, _UnixHTTPConnection]:
        """Stream a container's log (frames as demux_logs reads them; caller reads and closes)."""
        query = {"stdout": "1", "stderr": "1", "tail": str(tail), "since": since, "follow": "1" if follow else None}
        return self._request("GET", "/containers/%s/logs" % quote(container, safe=""), query=query, stream=True)

    def get_archive(self, container: str, path: str) -> tuple[http.client.HTTPResponse, _UnixHTTPConnection]:
        """Stream a tar archive of `path` in the container (caller reads and closes)."""
        return self._request("GET", "/containers/%s/archive" % quote(container, safe=""), query={"path": path},
                             stream=True)
