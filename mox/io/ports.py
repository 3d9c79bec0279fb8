"""Free TCP ports on 127.0.0.1 for local clusters (`mox bench cluster`, the test suite).

A port the kernel hands out for `bind(port 0)` lies in its ephemeral range, the range it also
draws from for the source port of every outgoing connection: between the moment a port is
picked and the moment a child process binds it, any `connect()` on the machine may take it.
So ports are drawn at random *below* the ephemeral range (above it if it starts too low),
where the kernel never hands out ports by itself, and checked free by binding them.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path
from typing import Final

__all__ = ["PORT_FLOOR", "free_ports", "port_is_free"]

# Below this, ports are often taken by services (and 1024 needs privileges).
PORT_FLOOR: Final = 20000
_rng = random.SystemRandom()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    # No SO_REUSEADDR: a port with connections lingering in TIME_WAIT counts as taken too.
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(count: int, *, span: int = 1, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct free ports outside the ephemeral range. With `span` > 1, each
    returned port p has p..p+span-1 free as well. Raises OSError if none can be found."""
    assert count >= 1
    assert span >= 1
    low, high = _ephemeral_range()
    if low - PORT_FLOOR >= 2000:
        first, last = PORT_FLOOR, low - span
    else:
        first, last = high + 1, 65535 - span
    assert last - first >= 1000, (first, last)
    ports: list[int] = []
    taken: set[int] = set()
    for _ in range(1000 * count):
        port = _rng.randint(first, last)
        block = range(port, port + span)
        if taken.isdisjoint(block) and all(port_is_free(p, host) for p in block):
            ports.append(port)
            taken.update(block)
            if len(ports) == count:
                return ports
    raise OSError(f"no {count} free port(s) in {first}..{last} on {host}")
