"""Bursts racing for the last of a budget never overspend any month, runs across a month's end
included (each counted in each month for its part there), on SQLite and on PostgreSQL."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker.model import AttemptId, JobId, SiteId, TenantId
from broker.store import JobStore, PostgresStore, SpendEntry, SqliteStore

MIDNIGHT = datetime(2026, 11, 30, 16, 0, tzinfo=UTC)  # Dec 1, 00:00 Beijing


def _race(store: JobStore, seed: int) -> None:
    rng = random.Random(seed)
    n = 30
    runs = []
    for i in range(n):
        start = MIDNIGHT - timedelta(hours=rng.uniform(0, 6))
        runs.append(SpendEntry(
            tenant=TenantId(rng.choice("ab")), site=SiteId("cloud"), job_id=JobId(f"j{i}"),
            attempt_id=AttemptId(f"j{i}-a1"), month="2026-11", reserved=round(rng.uniform(5, 60), 2),
            started=start, ends=start + timedelta(hours=rng.uniform(0.5, 12)),
        ))
    barrier = threading.Barrier(n)
    taken: list[bool] = [False] * n

    def burst(i: int) -> None:
        barrier.wait()
        taken[i] = store.reserve_spend(runs[i], tenant_limit=100, global_limit=150)

    threads = [threading.Thread(target=burst, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert any(taken) and not all(taken)
    for month in ("2026-11", "2026-12"):
        entries = store.spend_entries(month)
        for tenant in "ab":
            assert sum(e.reserved * e.in_month(month) for e in entries if e.tenant == tenant) <= 100 + 1e-6
        assert sum(e.reserved * e.in_month(month) for e in entries) <= 150 + 1e-6
    assert sorted(e.attempt_id for e in store.unsettled_spend()) == sorted(
        r.attempt_id for r, ok in zip(runs, taken, strict=True) if ok)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_racing_bursts_across_a_months_end_overspend_no_month_on_sqlite(tmp_path: Path, seed: int) -> None:
    store = SqliteStore(tmp_path / "broker.db")
    _race(store, seed)
    store.close()


@pytest.mark.parametrize("seed", [1, 2])
def test_racing_bursts_across_a_months_end_overspend_no_month_on_postgres(pg_dsn: str, seed: int) -> None:
    store = PostgresStore(pg_dsn)
    _race(store, seed)
    store.close()


