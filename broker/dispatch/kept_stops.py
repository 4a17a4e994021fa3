"""Victims of reclaim bookings a store kept (a restart, a new leader): read once before the first
pass decides, then watched until they stop (`broker.fairshare.stopping`).

Only the process that preempted watched a victim's stop. A victim that stopped while no broker
ran was then never seen stopped, and its units read free to any job while the owner's job waited
in Slurm's queue (a CI run saw explain send another borrowed job onto them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Coroutine, Mapping
from typing import Any

from adapters.base import Adapter
from broker.clock import Clock
from broker.dispatch.preempt import stopped_now, watch_stop
from broker.fair_reclaim import Reclaimer
from broker.model import Attempt, SiteId
from broker.store import JobStore, StoreError

log = logging.getLogger(__name__)


class KeptStops:
    """The preempted attempts this process reads until they stop."""

    def __init__(self) -> None:
        self.watched: set[str] = set()
        """Attempt ids one of `check`'s tasks watches now."""

    async def check(
        self,
        reclaimer: Reclaimer,
        store: JobStore,
        adapters: Mapping[SiteId, Adapter],
        clock: Clock,
        on_stopped: Callable[[str], None],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        stopping: Collection[str],
    ) -> None:
        """Read each booked victim not seen stopped and not watched, here or by a stop in flight
        (`stopping`: a preemption's own watch): stopped now, the reclaimer is told at once (the
        pass's snapshot stands); else a task (`spawn`) watches it and calls `on_stopped`."""
        for s in reclaimer.unseen_stops(clock.now()):
            if s.attempt_id in self.watched or s.attempt_id in stopping:
                continue
            try:
                attempt = store.get_attempt(s.attempt_id)
            except StoreError as exc:  # a later pass reads it again
                log.info("stopping attempt %s unread: %s", s.attempt_id, exc)
                continue
            adapter, backend_id = adapters.get(attempt.site), attempt.backend_id
            if adapter is None or backend_id is None or await stopped_now(adapter, attempt):
                reclaimer.stopped(s.attempt_id, clock.now())  # (or nothing runs the broker could read)
                continue
            self.watched.add(s.attempt_id)
            within_s = max(0.0, s.until - reclaimer.stop_time(clock.now()))  # (its cap, on the ticks)
            spawn(self._watch(adapter, attempt, within_s, on_stopped))

    async def _watch(
        self, adapter: Adapter, attempt: Attempt, within_s: float, on_stopped: Callable[[str], None],
    ) -> None:
        try:
            await watch_stop(adapter, attempt, within_s, on_stopped)
        finally:
            self.watched.discard(attempt.id)
