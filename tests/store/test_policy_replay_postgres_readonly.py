"""`szb policy replay --store DSN` reads a PostgreSQL store and never writes to it.

A real broker writes three jobs to a PostgreSQL database; the replay then runs as a user types
it: through a role that may only read, against a copy of the store in an older schema, against
a database holding no store, with an unreachable server or a refused login (one line naming the
DSN, the password never printed), and with `--since` at a stored job's own submit time.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, timedelta, timezone
from pathlib import Path

import grpc
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import JOB_PYTHON, ROOT, BrokerProcess
from tests.e2e.conftest import write_broker_config
from tests.e2e.test_jobs_api import TERMINAL, spec, submit, wait_for

SECRET = "s3cret-Pa55word"
BEIJING = timezone(timedelta(hours=8))
_names = itertools.count()


def replay(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker.cli", "policy", "replay", *args],
        cwd=cwd,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _new_database(server: str) -> str:
    name = f"szb_replay_{os.getpid()}_{next(_names)}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    return name


def _drop(server: str, *names: str) -> None:
    with psycopg.connect(server, autocommit=True) as admin:
        for name in names:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _shape(dsn: str) -> dict[str, list[str]]:
    """Table -> its columns, and the row count of every table: what a write would change."""
    with psycopg.connect(dsn) as db:
        rows = db.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY table_name, column_name"
        ).fetchall()
        shape: dict[str, list[str]] = {}
        for table, column in rows:
            shape.setdefault(table, []).append(column)
        for table in list(shape):
            count = db.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
            shape[table].append(f"rows={count[0] if count else None}")
    return shape


@pytest.fixture(scope="module")
def store(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, str]]:
    """(folder with policy.yaml, the store's database name, its DSN) after a real broker ran 3 jobs."""
    name = _new_database(pg_server)
    dsn = make_conninfo(pg_server, dbname=name)
    folder = tmp_path_factory.mktemp("replay-pg")
    config = write_broker_config(folder)
    config.write_text(config.read_text() + f"store: {{dsn: '{dsn}'}}\n")
    broker = BrokerProcess(config)
    broker.start()
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            for job in ("pg-one", "pg-two", "pg-three"):
                done = submit(stub, spec(job, [JOB_PYTHON, "-c", "print(1)"])).job
                assert wait_for(stub, done.id, TERMINAL).state == job_pb2.JOB_STATE_SUCCEEDED
    finally:
        broker.stop()
    yield folder, name, dsn
    _drop(pg_server, name)


def _jobs(out: subprocess.CompletedProcess[str]) -> int:
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["actual_runtimes"] == body["jobs"]
    return int(body["jobs"])


def test_a_role_that_may_only_read_replays_and_nothing_is_written(
    store: tuple[Path, str, str], pg_server: str
) -> None:
    folder, _, dsn = store
    role = f"szb_reader_{os.getpid()}"
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        db.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(role)))
    try:
        before = _shape(dsn)
        out = replay(
            folder, "--policy", "policy.yaml", "--store", make_conninfo(dsn, user=role), "-o", "json"
        )
        assert _jobs(out) == 3
        assert _shape(dsn) == before
    finally:
        with psycopg.connect(dsn, autocommit=True) as db:
            db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_store_of_an_older_schema_is_read_and_not_migrated(
    store: tuple[Path, str, str], pg_server: str
) -> None:
    folder, name, _ = store
    old = f"{name}_old"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(old), sql.Identifier(name))
        )
    try:
        dsn = make_conninfo(pg_server, dbname=old)
        # The schema before per-attempt agent secrets, fencing epochs, fair usage and leadership.
        with psycopg.connect(dsn, autocommit=True) as db:
            db.execute("ALTER TABLE attempts DROP COLUMN secret_hash, DROP COLUMN epoch")
            db.execute("ALTER TABLE events DROP COLUMN epoch")
            db.execute("DROP TABLE fair_usage, leadership")
        before = _shape(dsn)
        assert _jobs(replay(folder, "--policy", "policy.yaml", "--store", dsn, "-o", "json")) == 3
        assert _shape(dsn) == before
    finally:
        _drop(pg_server, old)


def test_a_database_without_a_store_is_named_and_left_empty(
    store: tuple[Path, str, str], pg_server: str
) -> None:
    folder = store[0]
    empty = _new_database(pg_server)
    try:
        dsn = make_conninfo(pg_server, dbname=empty)
        out = replay(folder, "--policy", "policy.yaml", "--store", dsn)
        assert out.returncode == 1
        assert out.stderr.count("\n") == 1 and dsn in out.stderr and "no jobs table" in out.stderr, out.stderr
        assert _shape(dsn) == {}
    finally:
        _drop(pg_server, empty)


def test_unreachable_and_refused_stores_are_one_line_naming_the_dsn_without_its_password(
    store: tuple[Path, str, str], pg_server: str
) -> None:
    folder = store[0]
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    server = conninfo_to_dict(pg_server)
    host, port = server.get("host", "127.0.0.1"), server.get("port", 5432)
    for dsn in (
        f"postgresql://szb:{SECRET}@127.0.0.1:{closed}/szb",
        f"postgresql://no_such_role:{SECRET}@{host}:{port}/szb",
        f"host=127.0.0.1 port={closed} user=szb password='{SECRET}' dbname=szb",
    ):
        out = replay(folder, "--policy", "policy.yaml", "--store", dsn)
        assert out.returncode == 1 and out.stdout == ""
        assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
        assert (
            SECRET not in out.stderr
            and dsn.replace(f"'{SECRET}'", SECRET).replace(SECRET, "***") in out.stderr
        )


def test_since_compares_postgres_timestamps_in_any_offset(store: tuple[Path, str, str]) -> None:
    folder, _, dsn = store
    with psycopg.connect(dsn) as db:
        times = [r[0] for r in db.execute("SELECT created_at FROM jobs ORDER BY created_at").fetchall()]
    assert len(times) == 3 and times[0] < times[1]
    # The second job's own submit time, to the microsecond, given in Beijing time: it and the third.
    at = times[1].astimezone(BEIJING).isoformat()
    got = replay(folder, "--policy", "policy.yaml", "--store", dsn, "--since", at, "-o", "json")
    assert _jobs(got) == 2
    # The saved JSON says which window it covers (in UTC); the table's title, in Beijing time as
    # the other commands say times.
    assert json.loads(got.stdout)["since"] == times[1].astimezone(UTC).isoformat()
    table = replay(folder, "--policy", "policy.yaml", "--store", dsn, "--since", at).stdout
    assert f"since {times[1].astimezone(BEIJING):%Y-%m-%d %H:%M} Beijing time" in table, table
    after = (times[-1] + timedelta(minutes=5)).astimezone(BEIJING)
    out = replay(folder, "--policy", "policy.yaml", "--store", dsn, "--since", after.isoformat())
    assert out.returncode == 1
    assert f"no recorded jobs since {after:%Y-%m-%d %H:%M} Beijing time" in out.stderr, out.stderr
