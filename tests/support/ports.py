"""Local TCP ports for tests: the one ``free_port``."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now (bound to port 0, then released).

    Good for a server a test starts next, or for a URL whose connection must be refused.
    Another process could take the port before it is used; a test that must be sure of it holds
    its own bound socket instead.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
