"""Reading a SQLite store for `szb policy replay` and `szb backup` never writes beside it: a store
a broker left with a -wal and no -shm (it stopped without a checkpoint) used to get a -shm
created beside it (in a read-only folder: "unable to open database file"); a SQLite file that
is no broker store was read as an empty one; and a PostgreSQL server that accepts but never
answers held the reader 130 s, for want of a connect timeout."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from broker.model import JobSpec, TenantId
from broker.store import SqliteStore, Submission
from broker.store._dialect import CONNECT_TIMEOUT_S, connect_timeout
from broker.store.snapshot import copy_sqlite


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_store_left_with_only_its_wal_is_read_whole_and_left_as_it_was(tmp_path: Path) -> None:
    live = tmp_path / "live"
    live.mkdir()
    store = SqliteStore(live / "broker.db")
    try:
        spec = JobSpec.model_validate({"name": "in-the-wal", "command": ["true"], "runtime_estimate": "1h"})
        store.submit(TenantId("lab"), [Submission(spec)] * 3, datetime.now(UTC))
        left = tmp_path / "left"
        left.mkdir()
        for name in ("broker.db", "broker.db-wal"):  # what a broker killed mid-run leaves (no -shm)
            shutil.copyfile(live / name, left / name)
    finally:
        store.close()
    assert (left / "broker.db-wal").stat().st_size > 0
    before = {p.name: _digest(p) for p in left.iterdir()}
    copy_sqlite(left / "broker.db", tmp_path / "copy.db")
    assert {p.name: _digest(p) for p in left.iterdir()} == before  # no -shm beside it, nothing changed
    with sqlite3.connect(tmp_path / "copy.db") as db:
        assert db.execute("SELECT count(*) FROM jobs").fetchone() == (3,)  # the -wal's rows too


def test_a_sqlite_file_that_is_no_broker_store_is_named_so(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "broker.db") as db:
        db.execute("CREATE TABLE notes (text TEXT)")
    with pytest.raises(OSError, match=r"no broker store at .*broker\.db: the SQLite file has no jobs table"):
        copy_sqlite(tmp_path / "broker.db", tmp_path / "copy.db")
    assert not (tmp_path / "copy.db").exists()


@pytest.mark.parametrize(
    "dsn",
    ["postgresql://szb:secret@127.0.0.1:5432/szb?sslmode=disable", "host=127.0.0.1 dbname=szb user=szb"],
)
def test_a_dsn_without_a_connect_timeout_gets_one(dsn: str) -> None:
    assert f"connect_timeout={CONNECT_TIMEOUT_S}" in connect_timeout(dsn)
    own = connect_timeout("postgresql://h/db?connect_timeout=3")
    assert "connect_timeout=3" in own and f"connect_timeout={CONNECT_TIMEOUT_S}" not in own


def test_a_dsn_gets_keepalives_so_a_dead_network_path_ends_a_store_call() -> None:
    """Held-out review (issue 13): a database whose network path died held a store call, and a
    whole API replica with it, for the kernel's defaults (hours of keepalive silence)."""
    from broker.store._dialect import DEAD_PATH

    given = connect_timeout("host=127.0.0.1 dbname=szb")
    assert all(f"{k}={v}" in given for k, v in DEAD_PATH.items()), given
    mine = "host=h dbname=d connect_timeout=3 keepalives=0 keepalives_idle=1 keepalives_interval=1 " \
        "keepalives_count=1 tcp_user_timeout=5"
    assert connect_timeout(mine) == mine  # a DSN that sets its own keeps them
