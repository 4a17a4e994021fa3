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

from broker.model import Job, JobState, TenantId
from broker.store import JobStore

PAGE = 500
"""Jobs per store read; the event loop gets a turn between reads."""


async def read_queue(store: JobStore, window: int) -> tuple[list[Job], int]:
    """Every queued job while there are at most `window`; beyond that, the first jobs (highest
    priority, then oldest) of each tenant's group of jobs asking the same hardware, the window split
    evenly among the groups. Also how many each group got (0: every queued job was read)."""
    if store.queued_up_to(window + 1) <= window:
        jobs: list[Job] = []
        token = ""
        while True:
            page = store.list_jobs(None, states=[JobState.QUEUED], page_size=PAGE, page_token=token)
            jobs.extend(page.jobs)
            token = page.next_page_token
            if not token:
                return jobs, 0
            await asyncio.sleep(0)
    groups = store.queue_groups()
    each = max(1, -(-window // max(1, len(groups))))
    heads: list[Job] = []
    for tenant, group in groups:
        heads.extend(await _first(store, tenant, group, each))
    heads.sort(key=lambda j: j.id)
    return heads, each


async def _first(store: JobStore, tenant: TenantId, group: str, count: int) -> list[Job]:
    jobs: list[Job] = []
    token = ""
    while len(jobs) < count:
        page = store.queue_head(tenant, group, page_size=min(PAGE, count - len(jobs)), page_token=token)
        jobs.extend(page.jobs)
        token = page.next_page_token
        if not token:
            break
        await asyncio.sleep(0)
    return jobs
