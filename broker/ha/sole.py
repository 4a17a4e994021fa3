"""Role `all` on PostgreSQL: the one process that dispatches for its database, elected and fenced.

Two `all` processes on one database (two hosts, or a compose file's replicas left at the
default role) would both dispatch, each taking the other's attempts for lost: every job ran
again and again. So an `all` process on PostgreSQL campaigns like a `scheduler` before it
dispatches: it starts only once elected (refusing, with the holder named, while another
process leads), fences its writes with its epoch, calls backends only while its lease holds,
and stops itself when the lease is lost (a pause past it, a standby's takeover): an `all`
process has no standby mode to fall back to, and its API goes with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import cast

from adapters.base import Adapter
from broker.ha.election import Elector, Timing
from broker.ha.guard import LeaderOnlyStore, leader_only
from broker.model import SiteId
from broker.store import JobStore, PostgresStore
from broker.waiting import within

log = logging.getLogger(__name__)


class SoleScheduler:
    """The scheduler lease of a role-`all` process; `on_lost(reason)` runs on the event loop."""

    def __init__(self, dsn: str, store: JobStore, timing: Timing) -> None:
        self.store = store
        self.timing = timing
        self._lease_book = PostgresStore(dsn)  # (renewals never wait behind the dispatcher's calls)
        self._lease_book.clock = store.clock
        self._loop = asyncio.get_running_loop()
        self._elected = asyncio.Event()
        self._on_lost: Callable[[str], None] = lambda reason: None
        self.elector = Elector(
            dsn, self._lease_book, on_elected=self._from_thread_elected, on_deposed=self._from_thread_deposed,
            timing=timing, clock=store.clock,
        )

    async def take(
        self, adapters: Mapping[SiteId, Adapter], *, on_lost: Callable[[str], None]
    ) -> tuple[dict[SiteId, Adapter], JobStore]:
        """Campaign until elected; then the adapters and the store as the dispatcher may use them
        (only while this process surely leads). Raises RuntimeError naming the holder when another
        process leads; `on_lost(reason)` runs on the event loop when the lease is lost later."""
        self._on_lost = on_lost
        self.elector.start()
        # Elected at once on a free database; after a crash, once the old lease ran out.
        wait_s = 3 * self.timing.lease_s + 2.0
        try:
            await within(self._elected.wait(), wait_s)
        except TimeoutError:
            lease = self._lease_book.leadership()
            await self.stop()
            holder = f"{lease.holder} (epoch {lease.epoch})" if lease is not None else "another process"
            raise RuntimeError(
                f"{holder} already dispatches for this database: role all on PostgreSQL runs alone; "
                "start this process with role api beside it (and role scheduler for a standby)"
            ) from None
        epoch = self.elector.epoch
        assert epoch is not None
        self.store.set_fence(epoch)  # the database refuses this store's writes once a newer term began
        log.info("role all on PostgreSQL: the scheduler lease is this process's (epoch %d)", epoch)
        may_act = self.elector.may_act
        guarded: dict[SiteId, Adapter] = {site: leader_only(a, may_act) for site, a in adapters.items()}
        return guarded, cast(JobStore, LeaderOnlyStore(self.store, may_act))

    async def stop(self) -> None:
        await asyncio.to_thread(self.elector.stop)  # steps down: a standby may lead at once
        self._lease_book.close()

    def _from_thread_elected(self, epoch: int) -> None:
        self._loop.call_soon_threadsafe(self._elected.set)

    def _from_thread_deposed(self, reason: str) -> None:
        self._loop.call_soon_threadsafe(self._on_lost, f"the scheduler lease was lost ({reason})")
