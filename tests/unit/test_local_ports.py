"""Loopback port allocation of the local platform."""

from __future__ import annotations

import socket

from flops_operator.platforms.local.ports import PortAllocator, port_is_free


def test_ports_are_distinct_free_and_remembered_until_released():
    allocator = PortAllocator()
    ports = [allocator.allocate() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(port_is_free(p) for p in ports)
    assert allocator.taken == frozenset(ports)
    allocator.release(ports[0])
    assert ports[0] not in allocator.taken


def test_a_listening_port_is_not_free():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert not port_is_free(sock.getsockname()[1])
