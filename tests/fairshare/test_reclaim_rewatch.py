"""A booking read back after a restart sees its victim stopped, and keeps the units for its owner.

Units preempted for an owner's job stay booked to it until that job runs; once the victim is seen
stopped they are held off every other job (`Reclaimer.keep_off`). Only the process that preempted
watched the victim's stop: a broker restarted while the victim stopped (a Slurm job killed at its
cut limit during the restart) read the booking back as never seen stopped, so the freed units
read free to any job, and a CI run saw live explain send another borrowed job onto them while the
owner's job waited in Slurm's queue. The restarted scheduler now reads such a victim before its
first pass decides. A real SQLite store and the local adapter, whose status of an attempt it no
longer knows is "gone".
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from adapters.local import LocalAdapter
from broker.clock import SystemClock
from broker.dispatch.dispatcher import Dispatcher
from broker.model import AttemptState, JobSpec, JobState, Offer, SiteId, TenantId
from broker.planning import Planner
from broker.policy import PolicyWatcher
from broker.store import JobMove, ReclaimBooking, ReclaimState, SqliteStore, Submission
from tests.brokerproc import write_broker_folder
from tests.fairshare.test_reclaim_bounded_e2e import POLICY, TOKENS

SITE = SiteId("lab")
OFFER = Offer(site=SITE, instance_type="a800", accelerator="A800", count=1, price_per_hour=10.0)
BOOKED = "are being reclaimed for another job; it waits until that job has them"


def test_a_victim_that_stopped_while_no_broker_ran_keeps_its_units_for_the_owner(tmp_path: Path) -> None:
    config = write_broker_folder(tmp_path / "broker", POLICY, TOKENS)
    store = SqliteStore(tmp_path / "broker.db")
    now = datetime.now(UTC)
    before = now - timedelta(seconds=30)

    def job(tenant: str, name: str, gpus: int) -> str:
        spec = JobSpec.model_validate({
            "name": name, "command": ["true"], "runtime_estimate": "20m", "max_wait": "2h",
            "resources": {"accelerators": {"count": gpus, "any_of": ["A800"]}},
        })
        [(stored, _)] = store.submit(TenantId(tenant), [Submission(spec)], before)
        return stored.id

    def attempt(job_id: str, backend_id: str, state: AttemptState, moves: list[JobMove]) -> str:
        store.transition(job_id, JobState.PLACING, before)
        made = store.create_attempt(job_id, SITE, OFFER, f"tok-{backend_id}", before)
        store.update_attempt(made.id, before, state=state, backend_id=backend_id, moves=moves)
        return made.id

    # The borrower's job preempted for the owner's; its process ended while no broker ran.
    victim_job = job("borrower", "victim", 1)
    started = [JobMove(JobState.PROVISIONING, "attempt", ""), JobMove(JobState.RUNNING, "running", "")]
    victim = attempt(victim_job, "gone-victim", AttemptState.RUNNING, started)
    stopped = [JobMove(JobState.PREEMPTED, "preempted", ""), JobMove(JobState.QUEUED, "requeued", "")]
    store.update_attempt(victim, before, state=AttemptState.PREEMPTED, moves=stopped)
    store.transition(victim_job, JobState.CANCELLED, before)  # (its own decision is not the point)
    # The owner's job was sent to its backend's queue on the units booked to it (as on Slurm).
    owner_job = job("owner", "mine", 1)
    attempt(owner_job, "pending-owner", AttemptState.PENDING, [JobMove(JobState.PROVISIONING, "attempt", "")])
    store.save_reclaim_state(ReclaimState({}, (
        ReclaimBooking(victim, "lab/a800", 1, owner_job, before.timestamp(), now.timestamp() + 300, False),
    )))
    # Another borrowed job wants the whole partition; the host reads both A800s free.
    another = job("borrower", "another", 2)

    adapter = LocalAdapter(SITE, {"data_dir": str(tmp_path / "data"), "accelerators": {"A800": 2}})
    planner = Planner(PolicyWatcher(config.parent / "policy.yaml"), SystemClock())

    async def first_pass() -> None:
        dispatcher = Dispatcher(store, {SITE: adapter}, planner=planner, clock=SystemClock())
        await dispatcher._schedule()
        for task in list(dispatcher._background):
            task.cancel()

    asyncio.run(first_pass())
    # The victim's units are the owner's: the other job waits in the broker and says why (it was
    # launched onto them).
    kept = store.get(another)
    assert kept.state == JobState.QUEUED, kept
    assert BOOKED in kept.message, kept.message
    assert planner.reclaimer.unseen_stops(now) == []  # the restart read the victim stopped
    assert [b.for_job for b in planner.reclaimer.booked_for(owner_job, now)] == [owner_job]
    store.close()
