"""Free loopback ports, handed out once per platform so two services never get the same one."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """Nobody listens on it. Like every server we start, ignore TIME_WAIT leftovers of closed
    connections (SO_REUSEADDR): they do not stop a new listener from binding."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


class PortAllocator:
    """Asks the kernel for an unused port and remembers it until released.

    The kernel may hand the same ephemeral port out again once our probe socket is closed and
    before the child binds it; remembering what we gave out keeps at least our own services apart.
    """

    def __init__(self, host: str = LOOPBACK) -> None:
        self.host = host
        self._taken: set[int] = set()

    def allocate(self) -> int:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((self.host, 0))
                port = sock.getsockname()[1]
            if port not in self._taken:
                self._taken.add(port)
                return port
        raise RuntimeError("no free loopback port found")

    def release(self, port: int) -> None:
        self._taken.discard(port)

    @property
    def taken(self) -> frozenset[int]:
        return frozenset(self._taken)
