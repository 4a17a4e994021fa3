"""Which queued jobs a full pass reads: all of them, or of a deep queue the heads of its groups.

Reading and deciding a million queued jobs in one pass held the scheduler for minutes and
gigabytes (no launch in 300 s, its own lease lost while it decoded specs). Past the window a pass
reads the head of each group, a group being one tenant's jobs that ask the same hardware: fair
share orders tenants, a higher priority class goes first within one, and jobs waiting for one
kind of hardware must not hide jobs another kind could start. Deeper jobs are decided once at
their submission and again as the heads drain. (Slurm bounds its passes the same way, per
partition: `partition_job_depth`.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from broker.model import Job, JobState, TenantId
from broker.store import UNGROUPED, JobPage, JobStore

PAGE = 500
"""Jobs per store read; the event loop gets a turn between reads."""
FILL_PER_PASS = 5000
"""Unkeyed rows (an older broker's) a pass keys per tenant."""
GROUPS_SCANNED = 1000
"""A tenant with more groups than its share has the heads of this many compared to choose them."""


async def read_queue(store: JobStore, window: int, *, fill: bool = True) -> tuple[list[Job], bool]:
    """Every queued job while there are at most `window`; beyond that, the heads of the queue
    groups: the window split evenly among the tenants with queued jobs, and each tenant's share
    among its groups, those whose head comes first (priority, then age) when it has more groups
    than its share. Also whether the queue was cut. `fill`: key an older broker's rows (the
    active scheduler's job, not a replica's)."""
    if store.queued_up_to(window + 1) <= window:
        # (Submissions after the count do not make it unbounded: past the window, the heads.)
        every = await _paged(lambda size, token: store.list_jobs(
            None, states=[JobState.QUEUED], page_size=size, page_token=token), window + 1)
        if len(every) <= window:
            return every, False
    tenants = store.queued_tenants()
    share = max(1, -(-window // max(1, len(tenants))))
    heads: list[Job] = []
    for tenant in tenants:
        groups = await _groups(store, tenant, share, fill)
        each = max(1, share // max(1, len(groups)))
        for group in groups:
            heads.extend(await _first(store, tenant, group, each))
    heads.sort(key=lambda j: j.id)
    return heads, True


async def _groups(store: JobStore, tenant: TenantId, share: int, fill: bool) -> list[str]:
    """The tenant's groups a pass reads: all of them, or the `share` whose heads come first.
    Rows an older broker stored unkeyed are keyed first, a few thousand a pass (until then they
    are read as one group, '')."""
    groups = store.queue_groups(tenant, max(share, GROUPS_SCANNED))
    if fill and groups and groups[0] == UNGROUPED and store.fill_queue_keys(tenant, FILL_PER_PASS):
        await asyncio.sleep(0)
        groups = store.queue_groups(tenant, max(share, GROUPS_SCANNED))
    if len(groups) <= share:
        return groups
    firsts = store.group_heads(tenant, groups)
    return sorted(groups, key=lambda g: firsts.get(g, (99, "")))[:share]


async def _first(store: JobStore, tenant: TenantId, group: str, count: int) -> list[Job]:
    return await _paged(lambda size, token: store.queue_head(tenant, group, page_size=size, page_token=token),
                        count)


async def _paged(read: Callable[[int, str], JobPage], count: int) -> list[Job]:
    """Up to `count` jobs, a page at a time, the event loop getting a turn between pages."""
    jobs: list[Job] = []
    token = ""
    while len(jobs) < count:
        page = read(min(PAGE, count - len(jobs)), token)
        jobs.extend(page.jobs)
        token = page.next_page_token
        if not token:
            break
        await asyncio.sleep(0)
    return jobs
