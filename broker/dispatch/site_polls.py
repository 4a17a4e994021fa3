"""Status polls of a site that does not answer: backed off, and said once.

Every live attempt is polled at every poll interval. With slurmrestd down, each poll of each
attempt failed and logged a line (1,570 of 1,621 log lines in 100 s in a review) and a recovering
backend got 16 calls a second. Now a site whose status calls fail for a site-wide reason (down,
timing out, refusing the credentials) is polled again after 2 s, doubling to a minute, and its
trouble is logged when it starts and when it ends.
"""

from __future__ import annotations

import logging

from adapters.base import AdapterError, AuthError, TransientError
from broker.model import SiteId

log = logging.getLogger(__name__)

FIRST_S = 2.0
MAX_S = 60.0


class SitePolls:
    """When each site's attempts may be polled again (loop seconds); all of them while it answers."""

    def __init__(self) -> None:
        self._down: dict[SiteId, tuple[float, float]] = {}  # site -> (next poll, back-off)

    def due(self, site: SiteId, now: float) -> bool:
        entry = self._down.get(site)
        return entry is None or entry[0] <= now

    def failed(self, site: SiteId, now: float, exc: AdapterError) -> bool:
        """Note a failed status call; False when it is not the site's fault (one attempt's own)."""
        if not isinstance(exc, TransientError | AuthError):
            return False
        entry = self._down.get(site)
        if entry is not None and entry[0] > now:
            return True  # another attempt of the same pass: noted already
        backoff = FIRST_S if entry is None else min(entry[1] * 2, MAX_S)
        if entry is None:
            log.warning("status polls of %s fail: %s; its attempts are polled again after %.0f s, "
                        "backing off to %.0f s", site, exc, backoff, MAX_S)
        self._down[site] = (now + backoff, backoff)
        return True

    def answered(self, site: SiteId) -> None:
        if self._down.pop(site, None) is not None:
            log.info("status polls of %s answer again", site)
