"""Which local user a loopback gRPC caller runs as, from the kernel's socket table (Linux).

Without a tokens file every caller is the built-in `dev` operator. That is meant for one person on
one machine, but the local executor's jobs run on that machine too: a job could call the broker
on loopback and read or cancel any job. A root broker runs each job under a private uid, so in dev
mode a loopback caller must run as the broker's own user (or root): `/proc/net/tcp[6]` names the
uid owning the caller's end of the connection.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

_PEER = re.compile(r"^ipv([46]):\[?([0-9a-fA-F.:]+?)\]?:(\d+)$")
TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))


def loopback_peer_uid(peer: str, tables: tuple[Path, ...] = TABLES) -> int | None:
    """The uid of the process owning the loopback socket grpc names `peer` (`ipv4:127.0.0.1:PORT`,
    `ipv6:[::1]:PORT`); None when it is not a loopback peer or the table does not list it."""
    m = _PEER.match(peer)
    if m is None:
        return None
    try:
        address = ipaddress.ip_address(m.group(2))
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    if not (address.is_loopback or (mapped is not None and mapped.is_loopback)):
        return None
    port = f"{int(m.group(3)):04X}"
    for table in tables:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 7 and fields[1].endswith(f":{port}") and _is_loopback_hex(fields[1]):
                return int(fields[7])
    return None


def _is_loopback_hex(local: str) -> bool:
    """`0100007F:D431` (127.0.0.1) or an IPv6 loopback or v4-mapped loopback, as the table writes them."""
    host = local.split(":")[0]
    if len(host) == 8:
        return host.endswith("7F")  # little-endian 127.x.x.x
    return host in ("00000000000000000000000001000000", "0000000000000000FFFF00000100007F")
