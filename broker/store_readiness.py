"""Readiness follows the store: the services that need it answer NOT_SERVING while it is away.

The whole server's health (`""`) stays SERVING while the process lives, as a liveness probe
wants (restarting every replica through a database outage helps nothing); a readiness probe
asks for `shangzhuang.broker.v1.BrokerService`, which a balancer should stop sending calls to
while no call could be answered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from broker.waiting import within

log = logging.getLogger(__name__)

PROBE_EVERY_S = 2.0
PROBE_TIMEOUT_S = 10.0
"""A read that has not answered in this long counts as the store away (a stalled database)."""


class StoreReadiness:
    """Probes the store with one small read at a time and reports each change of its state."""

    def __init__(
        self,
        probe: Callable[[], object],
        report: Callable[[bool], Awaitable[None]],
        *,
        every_s: float = PROBE_EVERY_S,
        timeout_s: float = PROBE_TIMEOUT_S,
    ) -> None:
        self._probe = probe
        self._report = report
        self._every_s = every_s
        self._timeout_s = timeout_s
        self._pending: asyncio.Future[object] | None = None
        self.ready = True

    async def run(self) -> None:
        """Probe until cancelled."""
        while True:
            await asyncio.sleep(self._every_s)
            ok, why = await self._once()
            if ok != self.ready:
                self.ready = ok
                if ok:
                    log.warning("readiness: SERVING again, the store answers")
                else:
                    log.warning("readiness: NOT_SERVING until the store answers a read (%s)", why)
                await self._report(ok)

    async def _once(self) -> tuple[bool, str]:
        # A stalled read keeps its thread: no second probe starts beside it.
        if self._pending is None or self._pending.done():
            self._pending = asyncio.ensure_future(asyncio.to_thread(self._probe))
        try:
            await within(asyncio.shield(self._pending), self._timeout_s)
        except TimeoutError:
            return False, f"no answer in {self._timeout_s:.0f} s"
        except Exception as exc:  # whatever the driver raises, the store did not answer
            return False, f"{type(exc).__name__}: {exc}"
        return True, ""
