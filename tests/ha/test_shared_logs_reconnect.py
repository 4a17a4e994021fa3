"""An API replica's store of agent output (`SharedJobLogs`) outlives a dropped database session:
review found every AppendLog and StreamJobLogs answering INTERNAL after a PostgreSQL restart, for
good, because its one connection was never replaced. Real PostgreSQL, sessions really ended."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from broker.ha.logs import SharedJobLogs
from broker.model import Attempt, JobSpec, Offer, SiteId, TenantId
from broker.store import PostgresStore, StoreUnavailable
from broker.store.base import Submission

NOW = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
OFFER = Offer(site=SiteId("ali-bj"), instance_type="ecs.gn7i", accelerator="A10", count=1, price_per_hour=1.0)


def end_other_sessions(dsn: str) -> int:
    """pg_terminate_backend on every other session of the test's database (what a restart does)."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        row = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    return int(row[0]) if row else 0


Logs = tuple[SharedJobLogs, Attempt]


@pytest.fixture
def logs(pg_dsn: str, tmp_path: Path) -> Iterator[Logs]:
    """A replica's shared logs on a fresh database, and one attempt to keep output for."""
    store = PostgresStore(pg_dsn)
    shared = SharedJobLogs(store, {}, tmp_path, pg_dsn)
    try:
        spec = JobSpec.model_validate({"name": "x", "command": ["true"], "runtime_estimate": "1h"})
        ((job, _),) = store.submit(TenantId("lab"), [Submission(spec)], NOW)
        yield shared, store.create_attempt(job.id, OFFER.site, OFFER, "tok", NOW)
    finally:
        shared.close()
        store.close()


def test_output_is_kept_and_read_again_after_the_database_dropped_the_session(
    pg_dsn: str, logs: Logs
) -> None:
    shared, attempt = logs
    assert shared.append(attempt, 0, b"line one\n") == 9
    assert end_other_sessions(pg_dsn) >= 1
    assert shared.append(attempt, 9, b"line two\n") == 18  # a new session, the chunk kept once
    assert shared.read(attempt, 0) == b"line one\nline two\n"
    assert end_other_sessions(pg_dsn) >= 1
    assert shared.read(attempt, 9) == b"line two\n"


def test_a_database_that_cannot_be_reached_is_store_unavailable(pg_dsn: str, logs: Logs) -> None:
    shared, attempt = logs
    shared._dsn = "host=127.0.0.1 port=1 connect_timeout=2"  # the server gone: nothing listens
    end_other_sessions(pg_dsn)
    with pytest.raises(StoreUnavailable, match="cannot be reached"):
        shared.append(attempt, 0, b"lost?\n")  # the agent is told to send it again
