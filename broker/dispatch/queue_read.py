"""Which queued jobs a full pass reads: all of them, or from a deep queue each tenant's first.

Reading and deciding a million queued jobs in one pass held the scheduler for minutes and
gigabytes (no launch in 300 s, its own lease lost while it decoded specs). Fair share orders
tenants, and within a tenant a higher priority class goes first, so each tenant's head (by
priority, then age) is what a pass can start or burst; deeper jobs are decided as the heads drain
(and once at their submission).
"""

from __future__ import annotations

import asyncio

from broker.model import Job, JobState, TenantId
from broker.store import JobStore

PAGE = 500
"""Jobs per store read; the event loop gets a turn between reads."""


async def read_queue(store: JobStore, window: int) -> tuple[list[Job], int]:
    """Every queued job while there are at most `window`; beyond that, each tenant's first (highest
    priority, then oldest), the window split evenly among the tenants with queued jobs. Also how
    many each tenant got (0: all)."""
    jobs: list[Job] = []
    token = ""
    while True:
        size = min(PAGE, window + 1 - len(jobs))
        page = store.list_jobs(None, states=[JobState.QUEUED], page_size=size, page_token=token)
        jobs.extend(page.jobs)
        token = page.next_page_token
        if not token:
            return jobs, 0
        if len(jobs) > window:
            break
        await asyncio.sleep(0)
    tenants = store.tenants_in_state(JobState.QUEUED)
    each = max(1, -(-window // max(1, len(tenants))))
    heads: list[Job] = []
    for tenant in tenants:
        heads.extend(await _first(store, tenant, each))
    heads.sort(key=lambda j: j.id)
    return heads, each


async def _first(store: JobStore, tenant: TenantId, count: int) -> list[Job]:
    jobs: list[Job] = []
    token = ""
    while len(jobs) < count:
        page = store.queue_head(tenant, page_size=min(PAGE, count - len(jobs)), page_token=token)
        jobs.extend(page.jobs)
        token = page.next_page_token
        if not token:
            break
        await asyncio.sleep(0)
    return jobs
