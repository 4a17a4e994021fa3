"""Work preempted by reclaim stays booked to its owner's job until seen stopped, or its cap past the
grace, timed on the clock's monotonic ticks: on the wall clock, a step forward (NTP, a resumed VM)
dropped every booking as never seen stopped (reclaim then preempted more for the same need) and a
step back held one an hour past its cap."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from broker.clock import ManualClock
from broker.fair_queue import FairQueue
from tests.burst.test_decision import NOW
from tests.burst.test_swap import PART, enabled


class SteppedClock(ManualClock):
    """A wall clock the test steps, beside ticks that only `run` moves (as NTP leaves the
    monotonic clock alone)."""

    def __init__(self, start: datetime) -> None:
        super().__init__(start)
        self._ticks = 1000.0

    def ticks(self) -> float:
        return self._ticks

    def run(self, seconds: float) -> None:
        self.advance(timedelta(seconds=seconds))
        self._ticks += seconds


def test_a_wall_clock_step_neither_drops_nor_prolongs_a_reclaim_booking(tmp_path: Path) -> None:
    policy = enabled(tmp_path)
    cap = timedelta(hours=1)  # far past any grace and the cap after it
    for step in (cap, -cap):
        clock = SteppedClock(NOW)
        fair = FairQueue(clock.ticks)
        fair.reclaimer.book(policy, fair.book, "victim", PART, 1, "owner-job", clock.now())
        clock.run(5.0)
        clock.advance(step)
        assert [s.attempt_id for s in fair.reclaimer.unseen_stops(clock.now())] == ["victim"], step
        assert fair.reclaimer.booked_for("owner-job", clock.now()), step
        clock.run(3600.0)  # past its grace and cap by the ticks: given up on, whichever way it stepped
        assert not fair.reclaimer.unseen_stops(clock.now()), step
