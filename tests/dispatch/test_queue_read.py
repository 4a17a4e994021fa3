"""`read_queue` on a real store: past the window, the window is split among tenants first, then
among a tenant's queue groups, so one tenant asking many shapes of hardware neither grows the pass
past the window nor squeezes the others (a review read 30,001 jobs at a window of 10,000, 274 s on
PostgreSQL, and the other tenant got one job)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from broker.dispatch.queue_read import read_queue
from broker.jobspec import AcceleratorRequest, Resources
from broker.model import JobSpec, TenantId
from broker.store import SqliteStore, Submission

NOW = datetime(2026, 12, 5, tzinfo=UTC)


def gpus(count: int, nodes: int = 1) -> JobSpec:
    return JobSpec(name="j", command=("true",), runtime_estimate=timedelta(hours=1),
                   resources=Resources(accelerators=AcceleratorRequest(count=count, any_of=("A800",)),
                                       nodes=nodes))


def test_the_window_is_shared_by_tenants_then_by_each_ones_groups(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "broker.db")
    wide, narrow = TenantId("wide"), TenantId("narrow")
    # 60 shapes of two jobs each, then 30 jobs of one shape.
    store.submit(wide, [Submission(gpus(1 + i % 8, 1 + i // 8)) for i in range(60) for _ in range(2)], NOW)
    store.submit(narrow, [Submission(gpus(1)) for _ in range(30)], NOW)
    jobs, most = asyncio.run(read_queue(store, 20))
    by = {t: [j for j in jobs if j.tenant == t] for t in (wide, narrow)}
    assert len(by[narrow]) == 10 and most == 10  # half the window
    assert len(by[wide]) == 10 and len({(j.spec.resources.accelerators.count, j.spec.resources.nodes)
                                        for j in by[wide]}) == 10  # its first ten groups, one job each
    # Under the window every queued job is read, and says so.
    small = SqliteStore(tmp_path / "small.db")
    small.submit(narrow, [Submission(gpus(1)) for _ in range(5)], NOW)
    assert [len(x) if isinstance(x, list) else x for x in asyncio.run(read_queue(small, 20))] == [5, 0]
