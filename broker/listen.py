"""The broker's ports (gRPC, the agent endpoint, `/metrics`): one error for an address it cannot bind.

Each names the address and the broker.yaml setting it came from, so an operator whose broker
would not start knows which of the three ports to free or move.
"""

from __future__ import annotations

import errno
import socket

from broker.errors import BrokerError


class ListenError(BrokerError):
    """An address the broker should listen on cannot be bound (in use, or not this host's)."""


def listen_error(address: str, setting: str, exc: OSError | None = None) -> ListenError:
    """The error for `address` (from `setting`); `exc` says why when the binder told (gRPC does not)."""
    if exc is None and not _resolves(address.rpartition(":")[0].strip("[]")):
        why = "the host name does not resolve"
    elif exc is None:
        why = "the address is in use (another szb serve?) or not this host's"
    elif exc.errno == errno.EADDRINUSE:
        why = "the address is in use (another szb serve?)"
    elif exc.errno == errno.EADDRNOTAVAIL:
        why = "not an address of this host"
    else:
        why = exc.strerror or str(exc)
    return ListenError(f"cannot listen on {address} ({setting}): {why}")


def _resolves(host: str) -> bool:
    """Whether `host` names an address (asked only once a bind failed: gRPC does not say why)."""
    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return False
    return True
