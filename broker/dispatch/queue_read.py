"""Which queued jobs a full pass reads: all of them, or from a deep queue each tenant's oldest.

Reading and deciding a million queued jobs in one pass held the scheduler for minutes and
gigabytes (no launch in 300 s, its own lease lost while it decoded specs). Fair share orders
tenants, and within a tenant the oldest job is decided first, so each tenant's head is what a
pass can start or burst; deeper jobs are decided as the heads drain (or at their submission).
"""

from __future__ import annotations

import asyncio

from broker.model import Job, JobState, TenantId
from broker.store import JobStore

PAGE = 500
"""Jobs per store read; the event loop gets a turn between reads."""


async def read_queue(store: JobStore, window: int) -> tuple[list[Job], int]:
    """Every queued job while there are at most `window`; beyond that, each tenant's oldest, the
    window split evenly among the tenants with queued jobs. Also how many each tenant got (0: all)."""
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
    # The first read holds, in id order, each tenant's oldest jobs up to its last id: a tenant with
    # enough there takes them; the others read on past it.
    read: dict[TenantId, list[Job]] = {}
    for job in jobs:
        read.setdefault(job.tenant, []).append(job)
    heads: list[Job] = []
    for tenant in tenants:
        have = read.get(tenant, [])[:each]
        if len(have) < each:
            have += await _oldest(store, tenant, each - len(have), after=jobs[-1].id)
        heads.extend(have)
    heads.sort(key=lambda j: j.id)
    return heads, each


async def _oldest(store: JobStore, tenant: TenantId, count: int, after: str) -> list[Job]:
    jobs: list[Job] = []
    token = after
    while len(jobs) < count:
        page = store.list_jobs(
            tenant, states=[JobState.QUEUED], page_size=min(PAGE, count - len(jobs)), page_token=token
        )
        jobs.extend(page.jobs)
        token = page.next_page_token
        if not token:
            break
        await asyncio.sleep(0)
    return jobs
