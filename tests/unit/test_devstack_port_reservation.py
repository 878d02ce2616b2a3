"""Ports held while the stack starts (devstack.components.ports_reserved): the kernel keeps them out of
outgoing connections, and the component that owns one can still listen on it."""

from __future__ import annotations

import socket

from devstack.components import ephemeral_port_range, port_is_free, ports_reserved
from devstack.ports import HOST


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def test_a_reserved_port_is_held_yet_its_component_can_listen_on_it_and_it_is_released_after() -> None:
    port = _free_port()
    with ports_reserved([port]) as held:
        assert held == [port]
        assert port_is_free(port)  # the component's own check before it spawns still passes
        for reuse_port in (False, True):  # an HTTP server (SO_REUSEADDR), a gRPC server (and SO_REUSEPORT)
            with socket.socket() as server:
                server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port:
                    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                server.bind((HOST, port))
                server.listen()
                client = socket.create_connection((HOST, port), timeout=2)
                conn, _ = server.accept()  # the listening component gets the connection
                client.close()  # the client closes first: TIME_WAIT stays on its side, not on `port`
                assert conn.recv(1) == b""
                conn.close()
        # Held: a socket that binds without SO_REUSEADDR, as an outgoing connection's port is, is refused.
        with socket.socket() as plain:
            try:
                plain.bind((HOST, port))
                raise AssertionError("the reserved port was free to bind without SO_REUSEADDR")
            except OSError:
                pass
    with socket.socket() as plain:
        plain.bind((HOST, port))  # released


def test_a_taken_port_is_skipped_not_an_error() -> None:
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen()
        taken = int(listener.getsockname()[1])
        with ports_reserved([taken]) as held:
            assert held == []


def test_the_ephemeral_range_is_the_kernels() -> None:
    ports = ephemeral_port_range()
    assert 1024 <= ports.start < ports.stop <= 65536
