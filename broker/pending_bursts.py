"""When each queued job's burst condition was first seen, kept on the clock that never steps.

The hysteresis (`burst.hysteresis`, fluid waits) is a duration: the condition must have held
that long. Kept as a wall-clock instant, a step of the wall clock (NTP, a resumed VM) cut it
short or stretched it by the step, as blocks and breakers were before they moved to ticks. The
pure decision takes an instant (`BurstInputs.burst_pending_since`): it gets `now` less the
ticks the condition has held.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from broker.clock import tick_at


class PendingBursts:
    """Job id → the tick its burst condition was first seen (while it still holds)."""

    def __init__(self, ticks: Callable[[], float]) -> None:
        self._ticks = ticks
        self._since: dict[str, float] = {}

    def get(self, job_id: str, now: datetime) -> datetime | None:
        """When the job's condition was first seen, as an instant of `now`'s wall clock."""
        since = self._since.get(job_id)
        return None if since is None else now - timedelta(seconds=max(0.0, self._ticks() - since))

    def seen(self, job_id: str, since: datetime | None, now: datetime) -> None:
        """Keep what a decision at `now` said (`burst_pending_since`; None: the condition is gone)."""
        if since is None:
            self._since.pop(job_id, None)
        elif job_id not in self._since:
            self._since[job_id] = tick_at(since, now, self._ticks())

    def pop(self, job_id: str) -> None:
        self._since.pop(job_id, None)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._since
