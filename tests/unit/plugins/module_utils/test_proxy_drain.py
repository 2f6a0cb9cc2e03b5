"""The drain: nothing may still reach the old release when it is stopped (no Docker, no nginx)."""

from __future__ import annotations

import socket
import threading
import time

from ansible_collections.greenlight.deploy.plugins.module_utils._engine.drain import (
    connections_to_port,
    nginx_workers_shutting_down,
    wait_drained,
)

HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"


def row(local: str, remote: str, state: str) -> str:
    return "   0: %s %s %s 00000000:00000000 00:00000000 00000000     0        0 1 1 0 10 0\n" % (local, remote, state)


def tables(tmp_path, tcp_rows, tcp6_rows=()):
    tcp = tmp_path / "tcp"
    tcp6 = tmp_path / "tcp6"
    tcp.write_text(HEADER + "".join(tcp_rows))
    tcp6.write_text(HEADER + "".join(tcp6_rows))
    return (str(tcp), str(tcp6))


def test_counts_connections_towards_and_on_the_old_port_only_while_open(tmp_path):
    # 0x1F41 = 8001 (old release), 0x1F42 = 8002 (new release), 0x0050 = 80 (nginx)
    paths = tables(tmp_path, [
        row("0100007F:1F41", "00000000:0000", "0A"),  # docker-proxy listening on 8001: not a connection
        row("0100007F:9C40", "0100007F:1F41", "01"),  # nginx worker -> 8001, ESTABLISHED
        row("0100007F:1F41", "0100007F:9C40", "01"),  # the accepting side of the same connection
        row("0100007F:9C41", "0100007F:1F41", "02"),  # SYN_SENT towards 8001
        row("0100007F:9C42", "0100007F:1F41", "06"),  # TIME_WAIT: closed already
        row("0100007F:9C43", "0100007F:1F42", "01"),  # to the new release
        row("0100007F:0050", "0100007F:E000", "01"),  # a client of nginx
    ], [
        row("0000000000000000FFFF00000100007F:9C44", "0000000000000000FFFF00000100007F:1F41", "01"),
    ])
    assert connections_to_port(8001, paths) == 4
    assert connections_to_port(8002, paths) == 1
    assert connections_to_port(8003, paths) == 0
    assert connections_to_port(8001, (str(tmp_path / "missing"),)) == 0


def test_counts_nginx_workers_that_are_shutting_down(tmp_path):
    for pid, cmdline in ((10, b"nginx: master process /usr/sbin/nginx\0"),
                         (11, b"nginx: worker process\0"),
                         (12, b"nginx: worker process is shutting down\0"),
                         (13, b"python3\0-c\0nginx: worker process is shutting down\0")):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cmdline").write_bytes(cmdline)
    (tmp_path / "self").mkdir()
    assert nginx_workers_shutting_down(str(tmp_path)) == 1
    (tmp_path / "12" / "cmdline").write_bytes(b"")  # exited (a zombie has an empty cmdline)
    assert nginx_workers_shutting_down(str(tmp_path)) == 0


def test_an_idle_old_release_drains_after_the_floor(tmp_path):
    paths = tables(tmp_path, [])
    started = time.monotonic()
    result = wait_drained(8001, max_seconds=10, min_seconds=0.3, tables=paths, proc=str(tmp_path))
    took = time.monotonic() - started
    assert result["idle"] is True and result["connections"] == 0
    assert 0.3 <= took < 2, took
    assert wait_drained(8001, max_seconds=0, tables=paths, proc=str(tmp_path))["idle"] is True


def test_a_connection_that_stays_open_holds_the_drain_until_the_bound(tmp_path):
    paths = tables(tmp_path, [row("0100007F:9C40", "0100007F:1F41", "01")])
    started = time.monotonic()
    result = wait_drained(8001, max_seconds=0.6, min_seconds=0.1, tables=paths, proc=str(tmp_path))
    assert time.monotonic() - started >= 0.6
    assert result["idle"] is False and result["connections"] == 1


def test_a_real_connection_holds_the_drain_until_it_closes(tmp_path):
    """A real TCP connection in this machine's /proc/net/tcp: the drain ends when it closes."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    assert connections_to_port(port) >= 1

    def close_later():
        time.sleep(0.8)
        client.close()
        accepted.close()

    closer = threading.Thread(target=close_later)
    started = time.monotonic()
    closer.start()
    try:
        result = wait_drained(port, max_seconds=10, min_seconds=0.1, proc=str(tmp_path))
    finally:
        closer.join()
        server.close()
    took = time.monotonic() - started
    assert result["idle"] is True and result["connections"] == 0
    assert 0.8 <= took < 5, took
