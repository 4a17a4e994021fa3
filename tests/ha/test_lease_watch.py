"""An API replica's `szb status` judges the scheduler's lease by its own clock, not the leader's.

Review: with the leader's host clock 60 s behind, `szb status` on a replica said "Scheduler: none
active" while the leader renewed its lease every half second (its end, by its clock, was already
past by the replica's); a dead leader on a host ahead would read as leading.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from broker.ha.lease_watch import LeaseWatch
from broker.store import LeaseRow

LEASE_S = 0.3


def row(epoch: int, until: datetime) -> LeaseRow:
    return LeaseRow(epoch=epoch, holder="h:1:abc", holder_pid=7, lease_until=until)


def test_a_renewing_leader_whose_clock_is_behind_leads() -> None:
    watch = LeaseWatch(LEASE_S)
    now = datetime.now(UTC)
    behind = now - timedelta(minutes=1)  # the leader's clock: its lease "ended" a minute ago by ours
    watch.saw(row(3, behind))
    for n in range(1, 4):  # renewed at each refresh
        time.sleep(0.1)
        renewed = row(3, behind + timedelta(seconds=n * 0.1))
        assert not watch.expired(renewed, now + timedelta(seconds=n * 0.1))
    time.sleep(LEASE_S + 0.1)  # then no renewal for a lease period: it has run out
    assert watch.expired(row(3, behind + timedelta(seconds=0.3)), now + timedelta(seconds=1))


def test_a_dead_leader_whose_clock_is_ahead_is_seen_to_stop() -> None:
    watch = LeaseWatch(LEASE_S)
    now = datetime.now(UTC)
    ahead = row(4, now + timedelta(hours=1))  # written by a host an hour ahead, then never again
    assert not watch.expired(ahead, now)  # first sight: only the clocks can say
    time.sleep(LEASE_S + 0.1)
    assert watch.expired(ahead, now + timedelta(seconds=1))
