"""Whether the active scheduler's lease still runs, as an API replica tells it (`szb status`).

The lease row's end is written by the leader's host clock: compared with a replica's own clock,
a healthy leader on a host an hour behind read as "none active", and a dead one on a host ahead
as leading. A replica that reads the row as it follows the scheduler's site report judges, as a
standby does, by its own monotonic clock: how long the row has gone without a renewal. Only a
row it has not yet seen change is judged by the clocks (a replica just started).
"""

from __future__ import annotations

import threading
import time
from datetime import datetime

from broker.store import LeaseRow


class LeaseWatch:
    """The lease row as last read, and since when (monotonic) it has not changed."""

    def __init__(self, lease_s: float) -> None:
        self.lease_s = lease_s
        self._seen: tuple[tuple[int, datetime], float, bool] | None = None  # (row, since, changed)
        self._lock = threading.Lock()

    def saw(self, lease: LeaseRow | None) -> None:
        """A read of the row (each refresh of the site report, and each status)."""
        if lease is None:
            return
        row, now = (lease.epoch, lease.lease_until), time.monotonic()
        with self._lock:
            if self._seen is None:
                self._seen = (row, now, False)
            elif self._seen[0] != row:
                self._seen = (row, now, True)

    def expired(self, lease: LeaseRow, now: datetime) -> bool:
        """Whether `lease` has run out: unrenewed for a lease period by this replica's clock; a
        row seen for less than that and never seen to change, by the clocks (its end, `now`)."""
        self.saw(lease)
        with self._lock:
            seen = self._seen
        if seen is None:
            return lease.lease_until <= now
        if time.monotonic() - seen[1] > self.lease_s:
            return True  # (a live leader renews within a lease period, whatever its clock)
        return False if seen[2] else lease.lease_until <= now
