"""Refused operator actions in the store, on SQLite and PostgreSQL: kept, filtered by tenant,
job and time, read by another store object, and paged through the audit trail with drains and
refused submissions of the very same time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker.audit import AuditTrail
from broker.model import TenantId
from broker.store import (
    AuditFilter,
    JobStore,
    PostgresStore,
    RefusedAction,
    RefusedSubmission,
    SiteDrain,
    SqliteStore,
)

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


def refused(minute: int, tenant: str, action: str, target: str) -> RefusedAction:
    return RefusedAction(NOW + timedelta(minutes=minute), tenant, f"{tenant}-bot", "tenant", action, target,
                         "NOT_FOUND" if action == "cancel" else "PERMISSION_DENIED", f"why {minute}")


def test_refused_actions_are_kept_and_filtered(open_store: Callable[[], JobStore]) -> None:
    store, other = open_store(), open_store()
    entries = [refused(0, "team-a", "drain", "local"), refused(1, "team-b", "cancel", "j-1"),
               refused(2, "team-a", "cancel", "j-2"), refused(3, "team-a", "undrain", "local")]
    for e in entries:
        store.record_refused_action(e)
    assert other.refused_actions(AuditFilter()) == entries  # oldest first
    assert [e.id for e in other.refused_actions(AuditFilter())] == sorted(e.id for e in store.refused_actions(
        AuditFilter()))
    assert other.refused_actions(AuditFilter(tenant="team-a")) == [entries[0], entries[2], entries[3]]
    assert other.refused_actions(AuditFilter(job_id="j-2")) == [entries[2]]
    assert other.refused_actions(AuditFilter(job_id="local")) == []  # a job filter: cancels only
    window = AuditFilter(since=NOW + timedelta(minutes=1), until=NOW + timedelta(minutes=3))
    assert other.refused_actions(window) == entries[1:3]
    assert other.refused_actions(AuditFilter(limit=2)) == entries[2:]  # the newest two


def test_audit_pages_through_refused_actions_drains_and_refusals_of_one_time(
    open_store: Callable[[], JobStore],
) -> None:
    """All three kinds at the very same time: each page picks up where the last ended, once."""
    store = open_store()
    for i in range(3):
        store.drain_site(SiteDrain(f"s{i}", "alice", f"r{i}", NOW))
        store.record_refused_action(RefusedAction(NOW, "team-a", "bot", "tenant", "drain", f"s{i}",
                                                  "PERMISSION_DENIED", f"denied {i}"))
    store.record_refusals([
        RefusedSubmission(NOW, TenantId("team-a"), "", "tenant", f"job{i}", f"refused {i}", (), "h", "{}")
        for i in range(2)
    ])
    trail = AuditTrail(store, lambda: None, lambda: None)  # type: ignore[arg-type,return-value]
    whole = trail.events(job_id="", tenant="", since=None, page_size=100)
    assert [e.kind for e in whole.events][:3] == ["action_refused"] * 3  # the oldest of one time
    assert whole.events[0].actor == "bot" and whole.events[0].tenant == "team-a"
    assert whole.events[0].site == "s0"
    assert whole.events[0].message == "drain s0 refused (PERMISSION_DENIED): denied 0"
    for size in (1, 2, 4):
        seen: list[str] = []
        token = ""
        while True:
            page = trail.events(job_id="", tenant="", since=None, page_size=size, page_token=token)
            seen += [e.message for e in page.events]
            if not (token := page.next_page_token):
                break
        assert sorted(seen) == sorted(e.message for e in whole.events), size
        assert len(seen) == len(set(seen)) == 8, size
