"""Loopback ports a test names before something binds them (and binds again after a restart).

A port the kernel hands out for `bind(0)` comes from the ephemeral range, the same range every
outgoing connection takes its local port from: in the gap before the broker binds it (or
between a kill and the restart on the same port) any connection on the machine may take it.
Ports below that range are only ever taken by an explicit bind.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

FIRST = 10000


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def lasting_port() -> int:
    """A free loopback port outside the ephemeral range (falls back to one inside it)."""
    last = _ephemeral_start() - 1
    for _ in range(200):
        port = random.randint(FIRST, last) if last > FIRST else 0
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ipv6_loopback_missing() -> str | None:
    """Why `::1` cannot be bound on this machine (a test's skip reason), or None when it can."""
    if not socket.has_ipv6:
        return "this Python was built without IPv6"
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        return f"no IPv6 loopback address ::1 on this machine ({exc})"
    return None
