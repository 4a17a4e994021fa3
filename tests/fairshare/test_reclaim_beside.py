"""Free units that a reclaim counts on are kept for the owner's job with the preempted ones (pure).

4 A800s on `lab/a800`, `owner` guaranteed 2; `borrower` runs 1 + 2 of them and 1 is free. An owner
job of 2 needs the free unit and one borrowed: reclaim preempts the 1-unit job and books its unit
to the owner's job. The free unit beside it was not booked, so a borrower's 1-unit job decided
meanwhile took it; once the victim stopped the owner's job still lacked a unit, and reclaim had to
preempt more borrowed work (charging the waste budget again) for the same need.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from broker.burst.snapshot import PassSnapshot
from broker.decision import Action
from broker.fair_queue import FairQueue
from broker.fair_reclaim import Reclaimer
from tests.fairshare.test_reclaim_keep_off import run_on
from tests.fairshare.test_reclaim_queued import NOW, PART, holding, policy


def reclaimed_for_owner(tmp_path: Path) -> FairQueue:
    fair = FairQueue()
    fair.book.started("borrowed-1", holding("borrower", 1, 600.0))
    fair.book.started("borrowed-2", holding("borrower", 2, 600.0))
    taken = fair.reclaimer.take(policy(tmp_path), fair.book, {}, ("owner", 2), PART, 1, NOW, for_job="mine")
    assert [v.attempt for v in taken.victims] == ["borrowed-1"]  # the free unit and one borrowed
    return fair


def test_the_free_unit_a_reclaim_counts_on_is_not_another_jobs(tmp_path: Path) -> None:
    fair = reclaimed_for_owner(tmp_path)
    for other in ("borrowed-job", "another-owner-job"):
        snap = PassSnapshot(now=NOW, offers=[])
        kept = fair.reclaimer.keep_off(run_on(1, 1, snap), other, 1, snap)
        assert kept is not None and kept.action == Action.WAIT, other
        assert kept.reasons[0].startswith("2 unit(s) on lab/a800 are being reclaimed for another job")
    snap = PassSnapshot(now=NOW, offers=[])
    assert fair.reclaimer.keep_off(run_on(1, 1, snap), "mine", 1, snap) is None  # its own


def test_the_free_unit_is_kept_across_a_restart_and_let_go_with_the_booking(tmp_path: Path) -> None:
    kept_state = reclaimed_for_owner(tmp_path).reclaimer.state()
    restarted = Reclaimer()
    restarted.restore(kept_state)  # what a store kept, read back by a new leader
    snap = PassSnapshot(now=NOW, offers=[])
    assert restarted.keep_off(run_on(1, 1, snap), "borrowed-job", 1, snap) is not None
    restarted.stopped("borrowed-1", NOW + timedelta(seconds=40))
    later = NOW + timedelta(seconds=60)  # stopped, but the owner's job has not run on them yet
    snap = PassSnapshot(now=later, offers=[])
    assert restarted.keep_off(run_on(2, 1, snap), "borrowed-job", 1, snap) is not None
    restarted.release("mine")  # the owner's job runs
    snap = PassSnapshot(now=later, offers=[])
    assert restarted.keep_off(run_on(2, 1, snap), "borrowed-job", 1, snap) is None
