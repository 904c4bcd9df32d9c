"""Free ports for the listeners genqueue starts, picked where nothing else will take them.

A port the kernel hands out for a bind to port 0 comes from its range for outgoing
connections (`net.ipv4.ip_local_port_range`, 32768-60999 by default). Between the pick and
the listener's own bind, any connection opened on the machine may be given that port, and
the listener then fails with "Address already in use". So the pick is made in 20000-29999:
below that range, above Ray's worker ports (10002-19999) and below Ray Serve's direct
ingress ports (30000 and up).
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

PICK_RANGE = range(20000, 30000)
_TRIES = 64
_LOCAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _outgoing_range() -> range:
    """The kernel's range for outgoing connections' ports (empty where it cannot be read)."""
    try:
        low, high = (int(part) for part in _LOCAL_RANGE.read_text().split())
    except (OSError, ValueError):
        return range(0)
    return range(low, high + 1)


def _socket(host: str) -> socket.socket:
    """A TCP socket of `host`'s address family."""
    return socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)


def _bindable(host: str, port: int) -> bool:
    with _socket(host) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1", among: range = PICK_RANGE) -> int:
    """A TCP port free on `host` right now, `among` those outside the range outgoing
    connections take.

    Falls back to a port the kernel picks when the machine's outgoing range covers all of
    `among` or no port tried in it is free.
    """
    outgoing = _outgoing_range()
    candidates = [p for p in among if p not in outgoing]
    for port in random.sample(candidates, min(_TRIES, len(candidates))):
        if _bindable(host, port):
            return port
    with _socket(host) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
