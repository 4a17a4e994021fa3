"""Whether the active scheduler's lease still runs, as an API replica tells it (`szb status`).

The lease row's end is written by the leader's host clock: compared with a replica's own clock,
a healthy leader on a host a minute behind read as "none active", and a dead one on a host ahead
as leading. A replica that reads the row as it follows the scheduler's site report (every
second) learns the leader's clock offset from the renewals it sees happen: each renewal it sees
change the row, between two of its reads, was written at most a read interval before it saw it,
so `lease_until - lease_s - seen_at` is the offset less that lag; the largest over the term is the
best estimate (never later than the truth by more than the shortest lag). The lease's end is then
read on the replica's clock. A row not yet seen to change (a replica just started) is judged by
the clocks, and one unrenewed for a lease period by the replica's monotonic clock has run out.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

from broker.store import LeaseRow


class LeaseWatch:
    """The lease row as last read, when it last changed (monotonic), and the leader's clock offset."""

    def __init__(self, lease_s: float, refresh_s: float = 1.0) -> None:
        self.lease_s = lease_s
        self.refresh_s = refresh_s
        self._row: tuple[int, datetime] | None = None
        self._changed_at = 0.0
        self._offset: float | None = None  # leader's clock minus ours (seconds), this term's best
        self._lock = threading.Lock()

    def saw(self, lease: LeaseRow | None, now: datetime) -> None:
        """A read of the row at `now` (this replica's clock): each site-report refresh, each status."""
        if lease is None:
            return
        row = (lease.epoch, lease.lease_until)
        with self._lock:
            if row == self._row:
                return
            first_sight = self._row is None
            new_term = self._row is not None and self._row[0] != lease.epoch
            self._row, self._changed_at = row, time.monotonic()
            if first_sight:
                return  # written who knows when: no offset from it
            sample = (lease.lease_until - timedelta(seconds=self.lease_s) - now).total_seconds()
            self._offset = sample if new_term or self._offset is None else max(self._offset, sample)

    def expired(self, lease: LeaseRow, now: datetime) -> bool:
        """Whether `lease` has run out, on this replica's clock (see the module's docstring)."""
        self.saw(lease, now)
        with self._lock:
            offset, unrenewed = self._offset, time.monotonic() - self._changed_at
        if unrenewed > self.lease_s + self.refresh_s:
            return True  # (a live leader renews within a lease period, whatever its clock)
        end = lease.lease_until - timedelta(seconds=offset or 0.0)
        return end <= now
