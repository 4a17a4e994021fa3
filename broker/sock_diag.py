"""One TCP socket's owner, asked of the kernel by its exact addresses (netlink `sock_diag`, Linux).

Reading `/proc/net/tcp` makes the kernel walk its whole connection table, which costs milliseconds
on a large host (4 ms of CPU per call was measured: every dev-mode RPC paid it); a `sock_diag`
request naming both ends is one hash lookup.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
TCP_ESTABLISHED = 1
_NO_COOKIE = 0xFFFFFFFF
_HEADER = struct.Struct("=IHHII")  # nlmsghdr
_UID_AT = _HEADER.size + 4 + 48 + 12  # inet_diag_msg: 4 bytes, the socket id, expires/rqueue/wqueue

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def established_uid(src: Address, sport: int, dst: Address, dport: int) -> int | None:
    """The uid owning the established TCP socket from `src:sport` to `dst:dport`; None when the
    kernel has no such socket or cannot be asked (no netlink here)."""
    if src.version != dst.version:
        return None
    family = socket.AF_INET if src.version == 4 else socket.AF_INET6
    sockid = struct.pack("!HH16s16s", sport, dport, src.packed.ljust(16, b"\0"), dst.packed.ljust(16, b"\0"))
    request = (
        struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 1 << TCP_ESTABLISHED)
        + sockid
        + struct.pack("=III", 0, _NO_COOKIE, _NO_COOKIE)
    )
    message = _HEADER.pack(_HEADER.size + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 1, 0) + request
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as nl:
            nl.settimeout(1.0)
            nl.sendto(message, (0, 0))
            reply = nl.recv(8192)
    except (OSError, AttributeError):  # (AttributeError: a platform without AF_NETLINK)
        return None
    if len(reply) < _UID_AT + 4 or _HEADER.unpack_from(reply)[1] == NLMSG_ERROR:
        return None  # (ENOENT: no socket with exactly these ends)
    if reply[_HEADER.size + 1] != TCP_ESTABLISHED:
        return None
    return int(struct.unpack_from("=I", reply, _UID_AT)[0])
