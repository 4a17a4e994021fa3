"""How long a live attempt has been silent, or pending, on a clock that never steps.

The wall clock steps: NTP correcting a drifted host, a VM resumed, an operator's `date -s`. A step
forward of a few minutes would read as minutes of silence from every running cloud attempt (each
taken for lost, its instance terminated and its job run again); a step back would hide a dead
instance for as long. So heartbeats are kept, and silence measured, on the monotonic clock
(`Clock.ticks`). The wall clock is read once per attempt only: when this process first asks about
one it has not heard from, to learn how long ago it began (its creation, or this process's start).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from broker.clock import Clock, tick_at
from broker.model import Attempt

MAX_MOMENTS = 64
"""Moments other than attempts' creations kept in ticks (each read off the wall clock once)."""


class Heard:
    """When each live attempt last reported (its agent's heartbeat), on the monotonic clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._beat: dict[str, float] = {}
        self._began: dict[str, float] = {}
        self._since: dict[datetime, float] = {}

    def beat(self, attempt_id: str) -> None:
        """The attempt's agent is alive now."""
        self._beat[attempt_id] = self.clock.ticks()

    def __contains__(self, attempt_id: object) -> bool:
        return attempt_id in self._beat

    def forget(self, attempt_id: str) -> None:
        self._beat.pop(attempt_id, None)
        self._began.pop(attempt_id, None)

    def keep_only(self, live: Iterable[str]) -> None:
        """Forget attempts that are no longer live (ended by any path)."""
        keep = set(live)
        for book in (self._beat, self._began):
            for attempt_id in [a for a in list(book) if a not in keep]:  # (beats come from threads too)
                book.pop(attempt_id, None)

    def silent_s(self, attempt: Attempt, since: datetime) -> float:
        """Seconds since the attempt last reported; never heard: since it began, or `since` (when
        this process began listening) if that is later."""
        ticks = self.clock.ticks()
        last = self._beat.get(attempt.id)
        return max(0.0, ticks - (self._start(attempt, since, ticks) if last is None else last))

    def age_s(self, attempt: Attempt) -> float:
        """Seconds since the attempt was created (its launch began)."""
        ticks = self.clock.ticks()
        return max(0.0, ticks - self._created(attempt, ticks))

    def pending_s(self, attempt: Attempt, since: datetime) -> float:
        """Seconds since the attempt began, or since `since` if that is later."""
        ticks = self.clock.ticks()
        return max(0.0, ticks - self._start(attempt, since, ticks))

    def _start(self, attempt: Attempt, since: datetime, ticks: float) -> float:
        """The later of the attempt's creation and `since`, in ticks. Each is read off the wall
        clock once: the creation per attempt, `since` per value (this process's start, mostly)."""
        return max(self._created(attempt, ticks), self._tick_of(since, ticks))

    def _created(self, attempt: Attempt, ticks: float) -> float:
        began = self._began.get(attempt.id)
        if began is None:
            began = self._began[attempt.id] = tick_at(attempt.created_at, self.clock.now(), ticks)
        return began

    def _tick_of(self, moment: datetime, ticks: float) -> float:
        tick = self._since.get(moment)
        if tick is None:
            tick = tick_at(moment, self.clock.now(), ticks)
            if len(self._since) < MAX_MOMENTS:  # (callers pass one or two: this process's start)
                self._since[moment] = tick
        return tick
