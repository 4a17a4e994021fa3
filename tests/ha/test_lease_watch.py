"""An API replica's `szb status` reads the scheduler's lease on its own clock, not the leader's.

Review: with the leader's host clock 60 s behind, `szb status` on a replica said "Scheduler: none
active" while the leader renewed its lease every half second (its end, by its clock, was already
past by the replica's); a dead leader on a host ahead would read as leading.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from broker.ha.lease_watch import LeaseWatch
from broker.store import LeaseRow

LEASE_S, REFRESH_S = 0.3, 0.1


def row(epoch: int, until: datetime) -> LeaseRow:
    return LeaseRow(epoch=epoch, holder="h:1:abc", holder_pid=7, lease_until=until)


def renewals(watch: LeaseWatch, skew: timedelta, n: int) -> tuple[LeaseRow, datetime]:
    """`n` renewals by a leader whose clock is `skew` off ours, each read by the replica at once."""
    for _ in range(n):
        now = datetime.now(UTC)
        renewed = row(3, now + skew + timedelta(seconds=LEASE_S))
        watch.saw(renewed, now)
        time.sleep(0.05)
    return renewed, now


def test_a_renewing_leader_whose_clock_is_behind_leads_and_one_that_stops_does_not() -> None:
    watch = LeaseWatch(LEASE_S, REFRESH_S)
    last, _ = renewals(watch, timedelta(minutes=-1), 4)
    assert not watch.expired(last, datetime.now(UTC))  # its end by its clock: a minute ago by ours
    time.sleep(LEASE_S + REFRESH_S + 0.1)
    assert watch.expired(last, datetime.now(UTC))


def test_a_leader_on_our_time_that_stops_renewing_runs_out_on_time() -> None:
    watch = LeaseWatch(LEASE_S, REFRESH_S)
    last, at = renewals(watch, timedelta(0), 4)
    assert not watch.expired(last, at)
    assert watch.expired(last, at + timedelta(seconds=LEASE_S + 0.05))  # at its end, not a refresh later


def test_a_dead_leader_whose_clock_is_ahead_is_seen_to_stop() -> None:
    watch = LeaseWatch(LEASE_S, REFRESH_S)
    now = datetime.now(UTC)
    ahead = row(4, now + timedelta(hours=1))  # written by a host an hour ahead, then never again
    assert not watch.expired(ahead, now)  # first sight: only the clocks can say
    time.sleep(LEASE_S + REFRESH_S + 0.1)
    assert watch.expired(ahead, datetime.now(UTC))
