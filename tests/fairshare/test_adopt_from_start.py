"""A restart charges a running on-prem job's tenant from the job's start, not from its sending.

Review of #14: after a restart (or a failover) the fair-share book adopts the live attempts it
lacks. One adopted while running was held from its attempt's creation: a job that waited 30 min
in Slurm's queue and then ran 10 had 40 min of use charged, its wait counted as use again after
every restart. It is now held from its last move to RUNNING, as the store records it. A real
SQLite store.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from broker.fair_queue import FairQueue
from broker.model import AttemptState, JobState, Offer, SiteId, TenantId
from broker.store import JobMove, SqliteStore, Submission
from tests.fairshare.test_reclaim_queued import NOW, policy, spec

OFFER = Offer(site=SiteId("lab"), instance_type="a800", accelerator="A800", count=2, price_per_hour=14.0)


def test_an_adopted_running_attempt_is_held_from_its_start(tmp_path: Path) -> None:
    pol = policy(tmp_path)
    store = SqliteStore(tmp_path / "broker.db")
    sent, ran, now = NOW - timedelta(minutes=40), NOW - timedelta(minutes=10), NOW
    [(job, _)] = store.submit(TenantId("borrower"), [Submission(spec(2))], sent)
    store.transition(job.id, JobState.PLACING, sent)
    attempt = store.create_attempt(job.id, OFFER.site, OFFER, "tok", sent)
    store.update_attempt(attempt.id, sent, state=AttemptState.PENDING, backend_id="17",
                         moves=[JobMove(JobState.PROVISIONING, "attempt", "")])
    store.update_attempt(attempt.id, ran, state=AttemptState.RUNNING,
                         moves=[JobMove(JobState.RUNNING, "running", "")])
    # A restarted broker's book adopts it.
    fair = FairQueue()
    fair.observe(pol, store.live_attempts(), now, store)
    held = fair.book.live[attempt.id]
    assert held.start == ran, held  # not its sending, 30 min earlier
    assert held.end == ran + timedelta(minutes=10)  # its runtime estimate from the start
    # Its use is a quarter of what holding it from its sending charged.
    was = FairQueue()
    was.book.set_half_life(fair.book.ledger.half_life_s)
    was.book.started(attempt.id, replace(held, start=sent, end=sent + timedelta(minutes=10)))
    for book in (fair.book, was.book):
        book.ended(attempt.id, now)
    used = fair.book.tenant_states(pol, now)["borrower"].usage.accelerators
    before = was.book.tenant_states(pol, now)["borrower"].usage.accelerators
    assert used > 0 and abs(used / before - 0.25) < 0.01, (used, before)
    store.close()
