"""Kept reclaim bookings after a restart or a new term: found by a review of stop 52's change.

- A capacity change during the victims' read (an await the pass did not have before) dropped the
  pass's snapshot under it, and the pass failed with `AttributeError`.
- A booking past its cap was read and brought back for another `SETTLE_S`.
- A restart with nothing queued in the broker never read the victims (only passes did).
- A re-elected scheduler kept its earlier term's book: the other leader's bookings were unknown.
A real SQLite store and the local adapter.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from adapters.local import LocalAdapter
from broker.clock import SystemClock
from broker.dispatch.dispatcher import Dispatcher
from broker.fair_queue import FairQueue
from broker.model import AttemptState, AttemptStatus, JobSpec, JobState, Offer, SiteId, TenantId
from broker.planning import Planner
from broker.policy import PolicyWatcher
from broker.store import JobMove, ReclaimBooking, ReclaimState, SqliteStore, Submission
from tests.brokerproc import write_broker_folder
from tests.fairshare.test_reclaim_bounded_e2e import POLICY, TOKENS
from tests.fairshare.test_reclaim_queued import NOW, PART, policy

SITE = SiteId("lab")
OFFER = Offer(site=SITE, instance_type="a800", accelerator="A800", count=1, price_per_hour=10.0)


class SlowRunning(LocalAdapter):
    """The victim still runs, read slowly (a loaded slurmctld)."""

    def status(self, backend_id: str) -> AttemptStatus:
        if backend_id == "victim-be":
            time.sleep(0.3)
            return AttemptStatus(state=AttemptState.RUNNING)
        return super().status(backend_id)


def kept(
    tmp_path: Path, *, until_in_s: float = 300.0, owner_sent: bool = False
) -> tuple[SqliteStore, Planner]:
    """A store holding one booking, for the owner's job, of a preempted borrower's attempt
    (backend id `victim-be`), which the local adapter no longer knows; the owner's job queued in
    the broker, or (`owner_sent`) pending at its backend."""
    config = write_broker_folder(tmp_path / "broker", POLICY, TOKENS)
    store = SqliteStore(tmp_path / "broker.db")
    now = datetime.now(UTC)
    before = now - timedelta(seconds=30)

    def job(tenant: str, name: str) -> str:
        spec = JobSpec.model_validate({
            "name": name, "command": ["true"], "runtime_estimate": "20m", "max_wait": "2h",
            "resources": {"accelerators": {"count": 1, "any_of": ["A800"]}},
        })
        [(stored, _)] = store.submit(TenantId(tenant), [Submission(spec)], before)
        return stored.id

    victim_job = job("borrower", "victim")
    store.transition(victim_job, JobState.PLACING, before)
    victim = store.create_attempt(victim_job, SITE, OFFER, "tok-v", before)
    store.update_attempt(victim.id, before, state=AttemptState.PREEMPTED, backend_id="victim-be",
                         moves=[JobMove(JobState.PROVISIONING, "attempt", "")])
    owner = job("owner", "mine")
    if owner_sent:
        store.transition(owner, JobState.PLACING, before)
        sent = store.create_attempt(owner, SITE, OFFER, "tok-o", before)
        store.update_attempt(sent.id, before, state=AttemptState.PENDING, backend_id="owner-be",
                             moves=[JobMove(JobState.PROVISIONING, "attempt", "")])
    store.save_reclaim_state(ReclaimState({}, (
        ReclaimBooking(victim.id, PART, 1, owner, before.timestamp(), now.timestamp() + until_in_s, False),
    )))
    return store, Planner(PolicyWatcher(config.parent / "policy.yaml"), SystemClock())


def local(tmp_path: Path, cls: type[LocalAdapter] = LocalAdapter) -> LocalAdapter:
    return cls(SITE, {"data_dir": str(tmp_path / "data"), "accelerators": {"A800": 2}})


def test_capacity_freed_while_the_victims_are_read_does_not_fail_the_pass(tmp_path: Path) -> None:
    store, planner = kept(tmp_path)
    failed: list[BaseException] = []

    async def a_pass() -> None:
        adapters = {SITE: local(tmp_path, SlowRunning)}
        dispatcher = Dispatcher(store, adapters, planner=planner, clock=SystemClock())
        asyncio.get_running_loop().call_later(0.1, dispatcher.capacity_changed)  # (a stop returned)
        try:
            await dispatcher._schedule()
        except Exception as exc:
            failed.append(exc)
        for task in list(dispatcher._background):
            task.cancel()

    asyncio.run(a_pass())
    assert not failed, repr(failed)
    store.close()


def test_a_booking_past_its_cap_is_not_brought_back(tmp_path: Path) -> None:
    store, planner = kept(tmp_path, until_in_s=-10.0)  # its cap ran out 10 s ago

    async def start() -> None:
        dispatcher = Dispatcher(store, {SITE: local(tmp_path)}, planner=planner, clock=SystemClock())
        await dispatcher.start()
        await dispatcher.stop()

    asyncio.run(start())
    assert planner.reclaimer.booked_jobs() == set()  # dropped, not booked for another SETTLE_S
    store.close()


def test_a_restart_with_nothing_queued_reads_the_kept_victims(tmp_path: Path) -> None:
    store, planner = kept(tmp_path, owner_sent=True)  # nothing waits in the broker

    async def start() -> None:
        dispatcher = Dispatcher(store, {SITE: local(tmp_path)}, planner=planner, clock=SystemClock())
        await dispatcher.start()
        await dispatcher.stop()

    asyncio.run(start())
    now = datetime.now(UTC)
    assert planner.reclaimer.unseen_stops(now) == []  # read stopped (the host no longer runs it)
    [owner] = planner.reclaimer.booked_jobs()
    assert [s.stopped for s in planner.reclaimer.booked_for(owner, now)] == [True]  # still the owner's
    store.close()


def test_a_reelected_scheduler_reads_the_other_leaders_bookings(tmp_path: Path) -> None:
    pol = policy(tmp_path)
    store = SqliteStore(tmp_path / "broker.db")
    p1, p2 = FairQueue(), FairQueue()  # the fair queues of two scheduler processes
    p1.begin_term()
    p1.observe(pol, [], NOW, store)  # P1 leads
    p2.begin_term()
    p2.observe(pol, [], NOW, store)  # P1 is deposed; P2 leads, preempts for the owner's job, dies
    p2.reclaimer.book(pol, p2.book, "victim-a1", PART, 2, "owner-job", NOW)
    p2.save_reclaim(store)
    p1.begin_term()  # P1 leads again (`Dispatcher.start`)
    p1.observe(pol, [], NOW, store)
    assert [s.attempt_id for s in p1.reclaimer.unseen_stops(NOW)] == ["victim-a1"]
    store.close()
