"""Injected time: the live server uses the wall clock, tests and the simulator their own."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...

    def ticks(self) -> float:
        """Seconds on a clock that never steps (monotonic): to measure how long, never to tell when.
        The wall clock steps (NTP, a resumed VM); a heartbeat's silence must not step with it."""
        ...


def tick_at(moment: datetime, now: datetime, ticks: float) -> float:
    """The tick (`Clock.ticks`) at which the wall clock read `moment`, as it reads `now` at `ticks`
    (a moment still to come: `ticks`). Read once and kept, a wall-clock moment is then measured
    on the ticks, so a later step of the wall clock does not move it."""
    return ticks - max(0.0, (now - moment).total_seconds())


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def ticks(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def ticks(self) -> float:
        return self._now.timestamp()  # (a manual clock moves only when told: it never steps by itself)

    def advance(self, delta: timedelta) -> None:
        self._now += delta

    def set(self, when: datetime) -> None:
        self._now = when
