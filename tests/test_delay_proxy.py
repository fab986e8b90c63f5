"""The delaying proxy (tests/delay_proxy.py), through real sockets on loopback.

The target runs in this process, so the times it stamps and the client's share one clock: the
one-way times each way can be measured, not just the round trip.
"""

from __future__ import annotations

import os
import socket
import socketserver
import threading
import time

import pytest

from tests.delay_proxy import DelayProxy

DELAY = 0.3  # seconds: well above loopback and scheduling noise on a loaded machine
SLACK = 1.0  # what a loaded machine may add on top, generously


class Answering(socketserver.StreamRequestHandler):
    """Reads lines; a line "?" is answered with the time it arrived and the lines before it."""

    def handle(self) -> None:
        lines = 0
        for line in self.rfile:
            if line == b"?\n":
                self.wfile.write(f"{time.monotonic()!r} {lines}\n".encode())
                lines = 0
            else:
                lines += 1


class Echoing(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(1 << 16):
            self.request.sendall(data)


@pytest.fixture
def target():
    """Starts a target server (its handler given) on an ephemeral port; yields its address."""
    servers = []

    def start(handler) -> tuple[str, int]:
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def ask(connection: socket.socket, reader, lines: int = 0) -> tuple[float, float, int]:
    """Sends `lines` lines and a question, each on its own; (seconds there, seconds back, lines)."""
    sent = time.monotonic()
    for index in range(lines):
        connection.sendall(b"line %d\n" % index)
    connection.sendall(b"?\n")
    arrived, counted = reader.readline().split()
    back = time.monotonic()
    return float(arrived) - sent, back - float(arrived), int(counted)


def test_the_delay_holds_the_chosen_direction_only_and_changes_at_runtime(target):
    with DelayProxy(target(Answering), to_target_s=DELAY) as proxy:
        with socket.create_connection(proxy.address, timeout=10) as connection, connection.makefile("rb") as reader:
            there, back, _ = ask(connection, reader)
            assert DELAY <= there < DELAY + SLACK
            assert back < DELAY

            proxy.set_delay(0.0, from_target_s=DELAY)
            there, back, _ = ask(connection, reader)
            assert there < DELAY
            assert DELAY <= back < DELAY + SLACK

            proxy.set_delay(0.0)
            there, back, _ = ask(connection, reader)
            assert there + back < DELAY


def test_round_trips_count_one_per_reply_however_many_chunks_went_before_it(target):
    with DelayProxy(target(Answering), to_target_s=0.01) as proxy:
        with socket.create_connection(proxy.address, timeout=10) as connection, connection.makefile("rb") as reader:
            for lines in (0, 3, 8):
                assert ask(connection, reader, lines)[2] == lines  # in order, none lost
        with socket.create_connection(proxy.address, timeout=10) as connection, connection.makefile("rb") as reader:
            ask(connection, reader, 2)
        counts = proxy.counters()
    sent = sum(len(b"line %d\n" % index) for lines in (0, 3, 8, 2) for index in range(lines)) + 4 * len(b"?\n")
    assert counts["round_trips"] == 4
    assert counts["connections"] == 2
    assert counts["bytes_to_target"] == sent
    assert counts["bytes_from_target"] > 0


def test_bytes_arrive_intact_in_order_and_in_flight_together(target):
    payload = os.urandom(4 << 20)  # 64 or more chunks of at most 64 KiB
    with DelayProxy(target(Echoing), to_target_s=DELAY, from_target_s=DELAY) as proxy:
        with socket.create_connection(proxy.address, timeout=10) as connection:
            started = time.monotonic()
            writer = threading.Thread(target=connection.sendall, args=(payload,))
            writer.start()
            received = bytearray()
            while len(received) < len(payload) and (data := connection.recv(1 << 16)):
                received += data
            elapsed = time.monotonic() - started
            writer.join(10)
        counts = proxy.counters()
    assert bytes(received) == payload
    # Held one after another, the chunks would take 64 x 0.6 s; held together, one delay each way.
    assert 2 * DELAY <= elapsed < 2 * DELAY + 3 * SLACK
    assert counts["bytes_to_target"] == counts["bytes_from_target"] == len(payload)


def test_stop_closes_open_connections_and_the_listener(target):
    proxy = DelayProxy(target(Answering))
    address = proxy.start()
    with socket.create_connection(address, timeout=10) as connection, connection.makefile("rb") as reader:
        ask(connection, reader)
        proxy.stop()
        try:
            assert connection.recv(1) == b""
        except ConnectionResetError:
            pass
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=10).close()


def test_a_target_that_refuses_closes_the_client_and_is_counted():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]
    with DelayProxy(("127.0.0.1", closed_port)) as proxy:
        with socket.create_connection(proxy.address, timeout=10) as connection:
            assert connection.recv(1) == b""
        assert proxy.counters()["connections"] == 1
