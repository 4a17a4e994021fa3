"""An API replica's reclaim bookings are the store's, not an accumulation of every one it read.

Review of stop 52: a replica (`FairQueue.follow`) took back the bookings the scheduler saved on
each read, but only added the ones it lacked. A booking the scheduler released (its owner's job
ran) stayed on the replica until its cap ran out, and one the scheduler saw stopped stayed
unstopped there: the replica's explain kept other jobs off units that were free, or let them onto
units still booked. A real SQLite store shared by a scheduler's and a replica's book.
"""

from __future__ import annotations

from pathlib import Path

from broker.fair_queue import FairQueue
from broker.store import SqliteStore
from tests.fairshare.test_reclaim_queued import NOW, PART, policy


def test_a_replica_mirrors_the_bookings_the_scheduler_saved(tmp_path: Path) -> None:
    pol = policy(tmp_path)
    store = SqliteStore(tmp_path / "broker.db")
    leader, replica = FairQueue(), FairQueue()
    leader.reclaimer.book(pol, leader.book, "victim-a1", PART, 2, "owner-job", NOW)
    leader.save_reclaim(store)
    replica.follow(pol, [], [], NOW, store)
    assert [(s.attempt_id, s.stopped) for s in replica.reclaimer.booked_for("owner-job", NOW)] == [
        ("victim-a1", False)
    ]
    leader.reclaimer.stopped("victim-a1", NOW)  # the scheduler saw it stop
    leader.save_reclaim(store)
    replica.follow(pol, [], [], NOW, store)
    assert [s.stopped for s in replica.reclaimer.booked_for("owner-job", NOW)] == [True]
    leader.reclaimer.release("owner-job")  # the owner's job runs on them
    leader.save_reclaim(store)
    replica.follow(pol, [], [], NOW, store)
    assert replica.reclaimer.booked_for("owner-job", NOW) == []
    assert replica.reclaimer.booked_jobs() == set()
    store.close()
