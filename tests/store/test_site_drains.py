"""Drained sites in the store, on SQLite and PostgreSQL: put in force, replaced, lifted, read by
another store object (another process), and their history paged through the audit trail."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker.audit import AuditTrail
from broker.audit_page import decode
from broker.model import TenantId
from broker.store import AuditFilter, JobStore, PostgresStore, RefusedSubmission, SiteDrain, SqliteStore

NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], JobStore]]:
    opened: list[JobStore] = []

    def factory() -> JobStore:
        if request.param == "sqlite":
            opened.append(SqliteStore(tmp_path / "broker.db"))
        else:
            opened.append(PostgresStore(request.getfixturevalue("pg_dsn")))
        return opened[-1]

    yield factory
    for s in opened:
        s.close()


def test_drains_are_kept_replaced_lifted_and_seen_by_another_store(
    open_store: Callable[[], JobStore],
) -> None:
    store, other = open_store(), open_store()
    first = SiteDrain("slurm-a", "alice", "rack 4", NOW)
    assert store.drain_site(first) is None
    assert other.site_drains() == [first]
    second = SiteDrain("slurm-a", "bob", "rack 4 and 5", NOW + timedelta(minutes=1))
    assert other.drain_site(second) == first  # a new reason replaces the drain, and says what it was
    store.drain_site(SiteDrain("aws-us-east-1", "alice", "", NOW + timedelta(minutes=2)))
    assert [d.site for d in store.site_drains()] == ["aws-us-east-1", "slurm-a"]
    assert store.undrain_site("slurm-a", "carol", NOW + timedelta(minutes=3)) == second
    assert store.undrain_site("slurm-a", "carol", NOW + timedelta(minutes=4)) is None  # nothing logged
    assert [d.site for d in other.site_drains()] == ["aws-us-east-1"]
    log = store.drain_log(AuditFilter())
    assert [(c.site, c.action, c.by, c.reason) for c in log] == [
        ("slurm-a", "drained", "alice", "rack 4"),
        ("slurm-a", "drained", "bob", "rack 4 and 5"),
        ("aws-us-east-1", "drained", "alice", ""),
        ("slurm-a", "undrained", "carol", "rack 4 and 5"),
    ]
    assert store.drain_log(AuditFilter(tenant="team-a")) == []  # a site's matter, no tenant's
    assert store.drain_log(AuditFilter(job_id="j-1")) == []


def test_audit_pages_through_drains_and_refusals_of_one_time(open_store: Callable[[], JobStore]) -> None:
    """A drain and a refusal at the very same time: each page picks up where the last ended, once."""
    store = open_store()
    for i in range(3):
        store.drain_site(SiteDrain(f"s{i}", "alice", f"r{i}", NOW))
    store.record_refusals([
        RefusedSubmission(NOW, TenantId("team-a"), "", "tenant", f"job{i}", f"refused {i}", (), "h", "{}")
        for i in range(2)
    ])
    trail = AuditTrail(store, lambda: None, lambda: None)  # type: ignore[arg-type,return-value]
    seen: list[str] = []
    token = ""
    while True:
        page = trail.events(job_id="", tenant="", since=None, page_size=2, page_token=token)
        seen += [e.message for e in page.events]
        if not page.next_page_token:
            break
        token = page.next_page_token
        decode(token)
    assert sorted(seen) == sorted([f"site s{i} drained: r{i}" for i in range(3)] + ["refused 0", "refused 1"])
    assert len(seen) == len(set(seen)) == 5
