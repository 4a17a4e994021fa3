"""Each tenant's learned ratio of actual to estimated runtime, read from the store's history.

The live wait projection stretches a running or queued job's runtime estimate by its tenant's
ratio: a tenant whose jobs ran twice their estimates gets projections twice as long. The rule
(median over the newest `window` succeeded jobs, clamped, 1.0 without history) is
`broker.burst.runtimes.learned_ratio`, the simulator's too; this module only reads the history
from the store. Each tenant's history is read again after `ttl_s` of clock time, or sooner when
one of its jobs finishes (`forget`).
"""

from __future__ import annotations

import logging
from datetime import datetime

from broker.burst.runtimes import HIGH, LOW, WINDOW, learned_ratio
from broker.model import TenantId
from broker.store import JobStore, StoreError

log = logging.getLogger(__name__)

__all__ = ["HIGH", "LOW", "WINDOW", "LearnedRatios", "learned_ratio"]

TTL_S = 300.0


class LearnedRatios:
    """Per-tenant ratios with their read times (the store is asked at most once per `ttl_s`)."""

    def __init__(self, window: int = WINDOW, ttl_s: float = TTL_S) -> None:
        self.window = window
        self.ttl_s = ttl_s
        self._known: dict[str, tuple[datetime, float]] = {}

    def ratio(self, tenant: str, store: JobStore, now: datetime) -> float:
        hit = self._known.get(tenant)
        if hit is not None and (now - hit[0]).total_seconds() < self.ttl_s:
            return hit[1]
        try:
            runs = store.recent_runtimes(TenantId(tenant), self.window)
        except StoreError as exc:  # a projection on the last ratio beats no decision
            log.warning("runtime history of %s not read: %s", tenant, exc)
            return hit[1] if hit is not None else 1.0
        value = learned_ratio(runs)
        if len(self._known) > 10_000:
            self._known.clear()
        self._known[tenant] = (now, value)
        return value

    def forget(self, tenant: str) -> None:
        """A job of the tenant finished: learn its ratio again on the next read."""
        self._known.pop(tenant, None)
