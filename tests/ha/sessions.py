"""Which PostgreSQL sessions a local process opened (its client ports, from /proc), to end one."""

from __future__ import annotations

import os

import psycopg


def _ports_of(pid: int) -> set[int]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[9] in inodes:
                    ports.add(int(parts[1].split(":")[1], 16))
    return ports


def end_listen_session(dsn: str, pid: int) -> None:
    """Terminate process `pid`'s LISTEN session (as an idle timeout or a proxy would end it)."""
    ports = _ports_of(pid)
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid, client_port, query FROM pg_stat_activity WHERE datname = current_database()"
        ).fetchall()
        listen = [r[0] for r in rows if r[1] in ports and str(r[2]).strip().upper().startswith("LISTEN")]
        assert len(listen) == 1, rows
        conn.execute("SELECT pg_terminate_backend(%s)", (listen[0],))
