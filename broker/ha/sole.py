"""Role `all` on PostgreSQL: the one process that dispatches for its database, elected and fenced.

Two `all` processes on one database (two hosts, or a compose file's replicas left at the
default role) would both dispatch, each taking the other's attempts for lost: every job ran
again and again. So an `all` process on PostgreSQL campaigns like a `scheduler` before it
dispatches: it starts only once elected (refusing, with the holder named, while another
process leads), fences its writes with its epoch, and calls backends only while its lease holds.

A lease lost with the database (an outage, a dropped session) is taken again when it is back:
if the next epoch is its own, no other process led meanwhile and it goes on as it was. When
another process took the lease, this one stops itself: an `all` process has no standby mode,
and what it knows of the attempts may be stale.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from adapters.base import Adapter
from broker.ha.election import Elector, Timing
from broker.ha.guard import leader_only
from broker.model import SiteId
from broker.store import JobStore, PostgresStore, StoreError
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
        self.epoch: int | None = None
        self._lost: tuple[int, str] | None = None
        """While the lease is lost: the epoch this process held, and why it was lost."""
        self._watch: asyncio.Task[None] | None = None
        self.elector = Elector(
            dsn, self._lease_book, on_elected=self._from_thread_elected, on_deposed=self._from_thread_deposed,
            timing=timing, clock=store.clock,
        )

    async def take(
        self, adapters: Mapping[SiteId, Adapter], *, on_lost: Callable[[str], None]
    ) -> dict[SiteId, Adapter]:
        """Campaign until elected; then the adapters as the dispatcher may call them (only while
        this process surely leads). Raises RuntimeError naming the holder when another process
        leads; `on_lost(reason)` runs on the event loop once another process took the lease."""
        self._on_lost = on_lost
        self.elector.start()
        # Elected at once on a free database; after a crash, once the old lease ran out.
        try:
            await within(self._elected.wait(), 3 * self.timing.lease_s + 2.0)
        except TimeoutError:
            lease = self._lease_book.leadership()
            await self.stop()
            holder = f"{lease.holder} (epoch {lease.epoch})" if lease is not None else "another process"
            raise RuntimeError(
                f"{holder} already dispatches for this database: role all on PostgreSQL runs alone; "
                "start this process with role api beside it (and role scheduler for a standby)"
            ) from None
        log.info("role all on PostgreSQL: the scheduler lease is this process's (epoch %s)", self.epoch)
        return {site: self.guard(a) for site, a in adapters.items()}

    def guard(self, adapter: Adapter) -> Adapter:
        """`adapter` as the dispatcher may call it: only while this process surely leads (also a
        site's adapter a policy reload builds again)."""
        return leader_only(adapter, self.elector.may_act)

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        await asyncio.to_thread(self.elector.stop)  # steps down: a standby may lead at once
        self._lease_book.close()

    def _from_thread_elected(self, epoch: int) -> None:
        self._loop.call_soon_threadsafe(self._now_elected, epoch)

    def _from_thread_deposed(self, reason: str) -> None:
        self._loop.call_soon_threadsafe(self._now_deposed, reason)

    def _now_elected(self, epoch: int) -> None:
        lost, self._lost = self._lost, None
        if lost is not None and epoch != lost[0] + 1:
            self._on_lost(f"other processes led meanwhile (epochs {lost[0] + 1} to {epoch - 1})")
            return
        self.store.set_fence(epoch)  # the database refuses this store's writes once a newer term began
        self.epoch = epoch
        if lost is not None:
            log.warning("scheduler lease taken again (epoch %d) after %s; no other process led meanwhile",
                        epoch, lost[1])
        self._elected.set()

    def _now_deposed(self, reason: str) -> None:
        if self.epoch is None or self._lost is not None:
            return
        self._lost = (self.epoch, reason)
        if self._watch is None or self._watch.done():
            self._watch = self._loop.create_task(self._until_taken_again())

    async def _until_taken_again(self) -> None:
        """While the lease is lost: stop this process as soon as another one holds it."""
        while self._lost is not None:
            await asyncio.sleep(self.timing.renew_s)
            try:
                lease = await asyncio.to_thread(self._lease_book.leadership)
            except StoreError:
                continue  # the database is away: this process takes the lease again when it is back
            lost = self._lost
            taken = lease is not None and lease.holder != self.elector.holder
            if lost is not None and lease is not None and taken and lease.epoch > lost[0]:
                self._on_lost(f"the scheduler lease was lost ({lost[1]}) and {lease.holder} holds it now")
                return
