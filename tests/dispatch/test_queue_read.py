"""`read_queue` on a real store: past the window, the window is split among tenants first, then
among a tenant's queue groups, so one tenant asking many shapes of hardware neither grows the pass
past the window nor squeezes the others (a review read 30,001 jobs at a window of 10,000, 274 s on
PostgreSQL, and the other tenant got one job)."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

from broker.dispatch.queue_read import read_queue
from broker.jobspec import AcceleratorRequest, Residency, Resources, SpotMode
from broker.model import JobSpec, Priority, TenantId
from broker.store import SqliteStore, Submission
from broker.store._queue_keys import queue_keys

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
    jobs, cut = asyncio.run(read_queue(store, 20))
    by = {t: [j for j in jobs if j.tenant == t] for t in (wide, narrow)}
    assert len(by[narrow]) == 10 and cut  # half the window
    assert len(by[wide]) == 10 and len({(j.spec.resources.accelerators.count, j.spec.resources.nodes)
                                        for j in by[wide]}) == 10  # its first ten groups, one job each
    # Under the window every queued job is read, and says so.
    small = SqliteStore(tmp_path / "small.db")
    small.submit(narrow, [Submission(gpus(1)) for _ in range(5)], NOW)
    jobs, cut = asyncio.run(read_queue(small, 20))
    assert len(jobs) == 5 and not cut


def test_a_tenant_with_more_groups_than_its_share_reads_those_whose_heads_come_first(tmp_path: Path) -> None:
    """A review: the groups were taken in the order of their names, so a high-priority job on other
    hardware, in a group whose name sorted late, was never read while the earlier groups waited."""
    store = SqliteStore(tmp_path / "broker.db")
    lab = TenantId("lab")
    store.submit(lab, [Submission(gpus(1 + i % 8, 1 + i // 8)) for i in range(30)], NOW)
    urgent = gpus(8, 9).model_copy(update={"priority": Priority.HIGH})  # its group's name sorts last
    [(job, _)] = store.submit(lab, [Submission(urgent)], NOW)
    jobs, _ = asyncio.run(read_queue(store, 10))
    assert len(jobs) == 10 and job.id in {j.id for j in jobs}


def test_a_pass_keys_the_rows_an_older_broker_stored_and_groups_them(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "broker.db")
    lab = TenantId("lab")
    made = store.submit(lab, [Submission(gpus(1 + i % 3)) for i in range(30)], NOW)
    with closing(sqlite3.connect(store.path)) as db:  # as an older replica writes them
        db.execute("UPDATE jobs SET priority_rank = 1, queue_group = ''")
        db.commit()
    assert store.queue_groups(lab, 10) == [""]
    # A replica reads them as one group and leaves them to the scheduler; the scheduler keys them.
    assert len(asyncio.run(read_queue(store, 10, fill=False))[0]) == 10
    assert store.queue_groups(lab, 10) == [""]
    jobs, _ = asyncio.run(read_queue(store, 10))
    assert len(store.queue_groups(lab, 10)) == 3 and len(jobs) == 9  # 10 // 3 of each group
    assert {j.id for j in jobs} <= {j.id for j, _ in made}


def test_placement_filters_make_groups_apart() -> None:
    base = gpus(1)
    keys = {queue_keys(base)[1]}
    for update in ({"spot": SpotMode.REQUIRED}, {"max_price_per_hour": 12.0},
                   {"data_residency": Residency.CN_MAINLAND},
                   {"resources": Resources(accelerators=base.resources.accelerators, memory_gb=500)},
                   {"resources": Resources(accelerators=base.resources.accelerators, cpus=16)}):
        keys.add(queue_keys(base.model_copy(update=update))[1])
    assert len(keys) == 6
    assert queue_keys(base.model_copy(update={"labels": {"team": "x"}, "priority": Priority.HIGH})) == (
        0, queue_keys(base)[1])
