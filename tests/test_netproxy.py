"""The bad-network proxy of ``integration/netproxy.py``, against an echo server on loopback."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from integration.netproxy import NetProxy


class Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


@pytest.fixture
def proxy() -> Iterator[NetProxy]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy = NetProxy(server.server_address[1]).start()
    yield proxy
    proxy.stop()
    server.shutdown()
    server.server_close()


def round_trip(sock: socket.socket, data: bytes = b"ping") -> tuple[bytes, float]:
    started = time.monotonic()
    sock.sendall(data)
    return sock.recv(4096), time.monotonic() - started


def test_traffic_goes_through(proxy: NetProxy) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        assert round_trip(sock)[0] == b"ping"
    assert proxy.connections == 1


def test_latency_is_added_each_way(proxy: NetProxy) -> None:
    proxy.latency = 0.2
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        data, took = round_trip(sock)
    assert data == b"ping"
    assert took >= 0.4


def test_a_cut_closes_open_connections_and_new_ones_work(proxy: NetProxy) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        round_trip(sock)
        assert proxy.cut() == 1
        assert sock.recv(4096) == b""  # closed by the proxy
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        assert round_trip(sock)[0] == b"ping"


def test_a_black_hole_holds_traffic_until_healed(proxy: NetProxy) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        proxy.black_hole = True
        sock.sendall(b"lost?")
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(4096)
        proxy.black_hole = False
        sock.settimeout(5)
        assert sock.recv(4096) == b"lost?"
