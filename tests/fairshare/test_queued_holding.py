"""Work waiting in a backend's queue is no usage, but takes its quota in the order (pure).

Review of #14: a job pending in Slurm's queue (it runs nothing) counted in its tenant's usage and
units in use from the moment it was sent. It now counts from when it is seen running; meanwhile
its units count against its tenant's quota, so the tenant's next job is not ranked within a
quota the queued one will take, and the order charges it as it charges the broker's own queue.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from broker.fairshare import QueuedWork, order
from broker.fairshare.book import FairShareBook, Holding, capacity_of
from broker.fairshare.standing import tenant_standings
from broker.model import Priority
from tests.fairshare.test_reclaim_queued import NOW, PART, holding, policy


def queued(tenant: str, gpus: int, age_s: float) -> Holding:
    return replace(holding(tenant, gpus, age_s), end=NOW - timedelta(seconds=age_s - 600), queued=True)


def work(job_id: str, tenant: str, gpus: int) -> QueuedWork:
    h = holding(tenant, gpus, 0.0)
    return QueuedWork(job_id, tenant, Priority.NORMAL, NOW, h.demand, gpus, (PART,))


def test_a_queued_attempt_uses_nothing_until_it_runs(tmp_path: Path) -> None:
    pol = policy(tmp_path)
    book = FairShareBook(half_life_s=3600.0)
    book.started("wait-a1", queued("owner", 2, 120.0))  # pending at Slurm two minutes
    states = book.tenant_states(pol, NOW)
    assert states["owner"].in_use == {} and states["owner"].usage.accelerators == 0
    rows = {r.tenant: r for r in tenant_standings(book, pol, NOW, {})}
    assert rows["owner"].usage_share == 0 and [q.in_use for q in rows["owner"].quotas] == [0]
    book.running("wait-a1", NOW)
    assert book.live["wait-a1"].start == NOW  # its usage counts from the start, not the send
    assert book.live["wait-a1"].end == NOW + timedelta(seconds=600)
    later = book.tenant_states(pol, NOW + timedelta(seconds=60))
    assert later["owner"].in_use == {PART: 2} and later["owner"].usage.accelerators > 0


def test_a_queued_attempt_that_ends_without_running_leaves_no_history(tmp_path: Path) -> None:
    pol = policy(tmp_path)
    book = FairShareBook(half_life_s=3600.0)
    book.started("wait-a1", queued("owner", 2, 600.0))
    book.ended("wait-a1", NOW)  # withdrawn, or cancelled, from Slurm's queue
    assert book.tenant_states(pol, NOW)["owner"].usage.accelerators == 0


def test_queued_units_take_the_quota_and_are_charged_in_the_order(tmp_path: Path) -> None:
    pol = policy(tmp_path)
    book = FairShareBook(half_life_s=0.0)
    book.started("wait-a1", queued("owner", 2, 60.0))  # the owner's whole quota of 2, pending
    book.started("run-a1", holding("borrower", 1, 60.0))  # the borrower runs one A800
    states = book.tenant_states(pol, NOW, {"owner", "borrower"})
    got = {s.job_id: s for s in order([work("o2", "owner", 1)], states, capacity_of(pol))}
    assert not got["o2"].in_quota  # its quota is taken by the queued job: no second one sent on it
    assert got["o2"].ratio == 0.0  # (its use, as shown, is none)
    # Charged as the broker's own queued jobs are: the borrower, running 1 with nothing queued,
    # goes ahead of the owner, running nothing with 2 queued.
    ranked = order([work("o2", "owner", 1), work("b1", "borrower", 1)], states, capacity_of(pol))
    assert [s.job_id for s in ranked] == ["b1", "o2"]


def test_a_queued_attempt_that_ran_unseen_is_charged_from_its_backend_start(tmp_path: Path) -> None:
    """Self-review: an attempt still pending in the store that ran and ended between two polls (or
    while the broker was down) was dropped as never run: its tenant was charged nothing."""
    from broker.fair_queue import FairQueue
    from broker.model import Attempt, AttemptId, AttemptState, AttemptStatus, JobId, SiteId
    from tests.fairshare.test_reclaim_queued import job, sent_to_queue

    pol = policy(tmp_path)
    sent = NOW - timedelta(hours=3)
    attempt = Attempt(id=AttemptId("a1"), job_id=JobId("j1"), number=1, site=SiteId("lab"),
                      offer=sent_to_queue(0).offer, token="t", state=AttemptState.PENDING,
                      created_at=sent, updated_at=sent)

    def usage(status: AttemptStatus | None, seen_running: bool) -> float:
        fair = FairQueue()
        fair.book.set_half_life(3600.0)
        fair.started(pol, job("j1", "owner", 2), attempt)
        if seen_running:
            fair.launched("a1", NOW - timedelta(hours=1))
        fair.ended(attempt, NOW, status)
        return fair.book.tenant_states(pol, NOW)["owner"].usage.accelerators

    seen = usage(None, seen_running=True)  # ran its last hour, seen running
    unseen = AttemptStatus(state=AttemptState.SUCCEEDED, exit_code=0, started_at=NOW - timedelta(hours=1),
                           stopped_at=NOW)
    assert seen > 0 and usage(unseen, seen_running=False) == seen
    never = AttemptStatus(state=AttemptState.CANCELLED)  # cancelled while still queued: it used nothing
    assert usage(never, seen_running=False) == 0
