"""Which local user a gRPC caller on this host runs as, from the kernel's socket table (Linux).

Without a tokens file every caller is the built-in `dev` operator. That is meant for one person on
one machine, but the local executor's jobs run on that machine too: a job could call the broker
(on loopback, or on the host's own address when it listens beyond loopback) and read or cancel
any job. A root broker runs each job under a private uid, so in dev mode a caller on this host
must run as the broker's own user (or root): `/proc/net/tcp[6]` names the uid owning the caller's
end of the connection.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path
from urllib.parse import unquote

from broker.sock_diag import Address, established_uid

_PEER = re.compile(r"^ipv([46]):\[?([0-9a-fA-F.:]+?)\]?:(\d+)$")
TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))


ESTABLISHED = "01"
UNKNOWN_UID = -1
"""A loopback caller whose connection the table does not list: never the broker's own user."""
_SERVER_ENDS: list[tuple[Address, int]] = []
"""The far ends (this server's address and port) of the callers the tables named: later callers
are asked of the kernel by both ends (`broker.sock_diag`), one lookup instead of a table walk."""
_MAX_SERVER_ENDS = 8


def local_peer_uid(peer: str, tables: tuple[Path, ...] = TABLES) -> int | None:
    """The uid of the process on this host owning the socket grpc names `peer`
    (`ipv4:127.0.0.1:PORT`, `ipv6:[::1]:PORT`, or one of the host's own addresses): the connected
    socket with exactly that local address and port. None for a caller on another host (or
    when no table can be read); `UNKNOWN_UID` for a loopback caller the tables do not list.
    Matching the port alone let a job bind its end to 127.0.0.2 on the port of a root listener
    on 127.0.0.1 (the agent endpoint's), and be read as root; judging loopback alone let a job
    call the host's own address on a broker listening beyond loopback, and be the dev operator."""
    m = _PEER.match(unquote(peer))
    if m is None:
        return None
    try:
        address = ipaddress.ip_address(m.group(2))
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    loopback = address.is_loopback or (mapped is not None and mapped.is_loopback)
    if not loopback and not _own_address(mapped or address):
        return None  # another host's caller: its uid is not ours to know
    # Either family may list an IPv4 caller: grpc names the client socket of an IPv6 socket
    # connected to 127.0.0.1 (as its own client makes them) `ipv4:`, the table `::ffff:127.0.0.1`.
    v4 = mapped if mapped is not None else address if address.version == 4 else None
    forms = [address] if v4 is None else [v4, ipaddress.IPv6Address(f"::ffff:{v4}")]
    port = int(m.group(3))
    if tables is TABLES:
        for end, end_port in _SERVER_ENDS:
            for src in forms:
                if (uid := established_uid(src, port, end, end_port)) is not None:
                    return uid
    wanted = {f"{_table_hex(a)}:{port:04X}" for a in forms}
    read_any = False
    for table in tables:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        read_any = True
        for line in lines:
            fields = line.split()
            if len(fields) > 7 and fields[1].upper() in wanted and fields[3] == ESTABLISHED:
                if tables is TABLES:
                    _learn(fields[2])
                return int(fields[7])
    return UNKNOWN_UID if read_any and loopback else None


def _own_address(address: Address) -> bool:
    """Whether `address` is one of this host's (a socket can be bound to it)."""
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((str(address), 0))
    except OSError:
        return False
    return True


def _learn(remote: str) -> None:
    """Keep a caller's far end (`ADDRHEX:PORT` as the table writes it) for the kernel lookups."""
    hex_address, _, hex_port = remote.partition(":")
    words = [int(hex_address[i:i + 8], 16).to_bytes(4, "little") for i in range(0, len(hex_address), 8)]
    end = (ipaddress.ip_address(b"".join(words)), int(hex_port, 16))
    if end not in _SERVER_ENDS:  # the newest first; the oldest (a server long gone) goes
        _SERVER_ENDS[:] = [end, *_SERVER_ENDS][:_MAX_SERVER_ENDS]


def _table_hex(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """The address as /proc/net/tcp[6] writes it: each 32-bit word in host (little-endian) order."""
    packed = address.packed
    return "".join(f"{int.from_bytes(packed[i:i + 4], 'little'):08X}" for i in range(0, len(packed), 4))
