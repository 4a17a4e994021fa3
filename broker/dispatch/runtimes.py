"""Each tenant's learned ratio of actual to estimated runtime, read from the store's history.

The live wait projection stretches a running or queued job's runtime estimate by its tenant's
ratio: a tenant whose jobs ran twice their estimates gets projections twice as long. The rule
(median over the newest `window` succeeded jobs, stretched by the spread of their errors,
clamped, 1.0 without history) is `broker.burst.runtimes.learned_ratio`, the simulator's too;
this module only reads the history from the store. Each tenant's history is read again after
`ttl_s` of clock time, or sooner when one of its jobs finishes (`forget`).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from broker.burst.runtimes import HIGH, LOW, WINDOW, learned_ratio
from broker.model import TenantId
from broker.store import JobStore, StoreError

log = logging.getLogger(__name__)

__all__ = ["HIGH", "LOW", "WINDOW", "LearnedRatios", "learned_ratio"]

TTL_S = 300.0
RETRY_S = 30.0
"""After a failed read, the fallback ratio stands this long (a failing store is not asked
once per running job per pass)."""


class LearnedRatios:
    """Per-tenant ratios with when to read them again (the store is asked at most once per
    `ttl_s`, or per `retry_s` while it fails)."""

    def __init__(self, window: int = WINDOW, ttl_s: float = TTL_S, retry_s: float = RETRY_S) -> None:
        self.window = window
        self.ttl_s = ttl_s
        self.retry_s = retry_s
        self._known: dict[str, tuple[datetime, float]] = {}
        """Tenant -> (read again after, ratio)."""

    def ratio(self, tenant: str, store: JobStore, now: datetime) -> float:
        hit = self._known.get(tenant)
        if hit is not None and now < hit[0]:
            return hit[1]
        try:
            runs = store.recent_runtimes(TenantId(tenant), self.window)
        except StoreError as exc:  # a projection on the last ratio beats no decision
            log.warning("runtime history of %s not read: %s", tenant, exc)
            value, fresh_s = (hit[1] if hit is not None else 1.0), self.retry_s
        else:
            value, fresh_s = learned_ratio(runs), self.ttl_s
        if len(self._known) > 10_000:
            self._known.clear()
        self._known[tenant] = (now + timedelta(seconds=fresh_s), value)
        return value

    def forget(self, tenant: str) -> None:
        """A job of the tenant finished: learn its ratio again on the next read."""
        self._known.pop(tenant, None)
