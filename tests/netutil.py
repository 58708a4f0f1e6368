"""Ports on 127.0.0.1 for servers a test starts."""

from __future__ import annotations

import contextlib
import random
import socket
from collections.abc import Iterator
from pathlib import Path

LOWEST = 20000


def free_port() -> int:
    """A port free now, picked below the kernel's ephemeral range where it can: every outgoing
    connection of every test takes its local port from that range, and one of them could take a
    port picked there before the server meant to use it has started."""
    below = _ephemeral_start()
    if below > LOWEST:
        chooser = random.SystemRandom()
        for _ in range(50):
            port = chooser.randrange(LOWEST, below)
            if _bindable(port):
                return port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        found: int = probe.getsockname()[1]
    return found


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A port that refuses connections for as long as the block runs: bound here and never
    listened on, so no other test's server can take it meanwhile (a port merely found free can
    be, and a client aimed at it then reaches that server)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]
