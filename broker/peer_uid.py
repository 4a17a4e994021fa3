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
import os
import re
import socket
from pathlib import Path
from urllib.parse import unquote

from broker.sock_diag import Address, established_uid

_PEER = re.compile(r"^ipv([46]):\[?([0-9a-fA-F.:]+?(?:%[^\]]+)?)\]?:(\d+)$")
TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))


ESTABLISHED = "01"
LISTEN = "0A"
UNKNOWN_UID = -1
"""A loopback caller whose connection the table does not list: never the broker's own user."""
_SERVER_ENDS: list[tuple[Address, int]] = []
"""The far ends (this server's address and port) of the callers the tables named: later callers
are asked of the kernel by both ends (`broker.sock_diag`), one lookup instead of a table walk."""
_MAX_SERVER_ENDS = 8


def local_peer_uid(peer: str, tables: tuple[Path, ...] = TABLES) -> int | None:
    """The uid of the process on this host owning the socket grpc names `peer`
    (`ipv4:127.0.0.1:PORT`, `ipv6:[::1]:PORT`, `ipv6:[fe80::1%eth0]:PORT` or another of the host's
    own addresses): the connected socket with exactly that local address and port whose far end
    is one of this process's listening sockets. None for a caller on another host (or when no
    table can be read); `UNKNOWN_UID` for a caller on this host the tables do not list, or a peer
    that cannot be read (a unix socket's). Matching the port alone let a job bind its end to
    127.0.0.2 on the port of a root listener on 127.0.0.1 (the agent endpoint's), and be read as
    root; judging loopback alone let a job call the host's own address, and be the dev operator."""
    m = _PEER.match(unquote(peer))
    if m is None:  # a peer we cannot read is refused: a unix socket's caller (`--listen
        # unix-abstract:NAME:0`) is in no TCP table, and an abstract one has no file mode to keep
        # any local user, a job too, from calling
        return UNKNOWN_UID
    try:
        address = ipaddress.ip_address(m.group(2))
    except ValueError:
        return UNKNOWN_UID
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
    return _walk(tables, {f"{_table_hex(a)}:{port:04X}" for a in forms})


def _walk(tables: tuple[Path, ...], wanted: set[str]) -> int | None:
    """The uid of the established socket the tables list with a local end in `wanted` and (in the
    kernel's own tables) a far end this process listens on; its far end is learnt."""
    rows: list[list[str]] = []
    read_any = False
    for table in tables:
        try:
            rows += [line.split() for line in table.read_text().splitlines()[1:]]
            read_any = True
        except OSError:
            continue
    # Sockets connected elsewhere may share the caller's local port: only one to us is the caller.
    ours = _own_listeners(rows) if tables is TABLES else None
    for fields in rows:
        if len(fields) > 9 and fields[1].upper() in wanted and fields[3] == ESTABLISHED:
            end = _end(fields[2])
            if ours is not None and not any(_same(a, end[0]) and p == end[1] for a, p in ours):
                continue
            if ours is not None and end not in _SERVER_ENDS:  # the newest first; the oldest goes
                _SERVER_ENDS[:] = [end, *_SERVER_ENDS][:_MAX_SERVER_ENDS]
            return int(fields[7])
    return UNKNOWN_UID if read_any else None


def _own_listeners(rows: list[list[str]]) -> list[tuple[Address, int]]:
    """The (address, port) of each listening socket among `rows` that this process holds."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return [_end(f[1]) for f in rows if len(f) > 9 and f[3] == LISTEN and f[9] in inodes]


def _same(listener: Address, far: Address) -> bool:
    """Whether a connection to `far` reaches a socket listening on `listener` (any address, or
    the same one, an IPv4-mapped IPv6 address counting as its IPv4 one)."""
    if listener.is_unspecified:
        return True
    plain = [getattr(a, "ipv4_mapped", None) or a for a in (listener, far)]
    return plain[0] == plain[1]


def _own_address(address: Address) -> bool:
    """Whether `address` is one of this host's (a socket can be bound to it)."""
    try:
        if address.version == 4:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind((str(address), 0))
            return True
        scope = getattr(address, "scope_id", None) or ""  # (a link-local caller's interface)
        index = int(scope) if scope.isdigit() else socket.if_nametoindex(scope) if scope else 0
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind((str(address).partition("%")[0], 0, 0, index))
    except OSError:
        return False
    return True


def _end(hex_end: str) -> tuple[Address, int]:
    """`ADDRHEX:PORT` as the table writes it (each 32-bit word in host order) as (address, port)."""
    hex_address, _, hex_port = hex_end.partition(":")
    words = [int(hex_address[i : i + 8], 16).to_bytes(4, "little") for i in range(0, len(hex_address), 8)]
    return ipaddress.ip_address(b"".join(words)), int(hex_port, 16)


def _table_hex(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """The address as /proc/net/tcp[6] writes it: each 32-bit word in host (little-endian) order."""
    packed = address.packed
    return "".join(f"{int.from_bytes(packed[i:i + 4], 'little'):08X}" for i in range(0, len(packed), 4))
