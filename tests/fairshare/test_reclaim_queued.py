"""Reclaim for an owner's job bound for, or pending in, a batch queue behind borrowed work (pure).

4 A800s on `lab/a800`, `owner` guaranteed 2. A pass reuses its capacity reading for a poll
interval: a job decided beside a borrowed one it has just placed reads the A800s free, the
borrowed job's units claimed beside them. And a job already pending in the queue is an attempt
the book counts as held by its tenant, though it runs nothing.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from broker.burst.snapshot import PassSnapshot
from broker.decision import Action, Decision
from broker.fair_queue import FairQueue
from broker.fair_reclaim import bound_for_queue
from broker.fairshare.book import Holding
from broker.fairshare.usage import Demand
from broker.model import Job, JobId, JobSpec, JobState, Offer, Resources, SiteId, TenantId
from broker.policy import Policy, load_policy_text
from tests.burst.conftest import write_policy
from tests.store.test_runtime_ratios import NOW

PART = "lab/a800"
POLICY = """\
version: 1
currency: CNY
accelerators: accelerators.yaml
regimes: regimes.yaml
sites:
  - id: lab
    adapter: slurm
    country: CN
    residency: cn-mainland
    partitions:
      - {name: a800, accelerator: A800, count_per_node: 4, price_hour: 14.0}
tenants:
  - {id: owner, kind: institute, entity_country: CN, share: {quota: {lab/a800: 2}}}
  - {id: borrower, kind: sme, entity_country: CN}
fair_share:
  reclaim: {grace: 30s, max_capacity_share: 0.5, window: 10m}
compliance:
  residency:
    zones: {cn-mainland: {countries: [CN]}}
"""
QUEUED = "lab expects a wait of 10 min, within the 1440 min the job may still wait; sent to its queue"


def policy(tmp_path: Path) -> Policy:
    path = write_policy(tmp_path, POLICY)
    return load_policy_text(path.read_text(), str(path))


def spec(gpus: int) -> JobSpec:
    return JobSpec(name="j", command=("true",), runtime_estimate=timedelta(minutes=10),
                   resources=Resources.model_validate({"accelerators": {"count": gpus, "any_of": ["A800"]}}))


def job(job_id: str, tenant: str, gpus: int) -> Job:
    return Job(id=JobId(job_id), tenant=TenantId(tenant), spec=spec(gpus), state=JobState.QUEUED,
               created_at=NOW, updated_at=NOW)


def holding(tenant: str, gpus: int, age_s: float) -> Holding:
    return Holding(tenant, PART, Demand(float(gpus), 0.0, 0.0), gpus, NOW - timedelta(seconds=age_s))


def sent_to_queue(free: int) -> Decision:
    offer = Offer(site=SiteId("lab"), instance_type="a800", accelerator="A800", count=4,
                  price_per_hour=14.0, free=free)
    return Decision(Action.RUN, offer, (QUEUED,))


def test_units_claimed_in_the_pass_by_other_jobs_are_not_free_for_the_job() -> None:
    decision = sent_to_queue(free=4)
    assert not bound_for_queue(decision, spec(1))  # (main: read free, so never bound for the queue)
    assert bound_for_queue(decision, spec(1), others=4)
    assert not bound_for_queue(decision, spec(1), others=3)


def test_an_owner_job_decided_beside_a_borrowed_job_just_placed_reclaims(tmp_path: Path) -> None:
    pol = policy(tmp_path)
    fair = FairQueue()
    fair.book.started("borrowed-a1", holding("borrower", 4, 1.0))  # placed by this pass's snapshot
    mine = job("mine", "owner", 1)
    fair.order(pol, [mine], NOW, remember=True)
    snap = PassSnapshot(now=NOW, offers=[], claimed={PART: 4 + 1})  # the borrowed job's and its own
    got = fair.adjust(pol, mine, sent_to_queue(free=4), snap)
    assert got.action == Action.WAIT, got.reasons
    assert [v.attempt for v in got.reclaim] == ["borrowed-a1"]
    assert got.reasons[0].startswith("reclaiming 4 borrowed unit(s) on lab/a800 for its quota")
    assert snap.claimed[PART] == 4  # it waits in the broker: its own units are not claimed


def test_an_owner_job_pending_in_the_queue_does_not_hold_its_own_quota(tmp_path: Path) -> None:
    pol = policy(tmp_path)
    fair = FairQueue()
    fair.book.started("borrowed-a1", holding("borrower", 3, 60.0))
    fair.book.started("mine-a1", holding("owner", 2, 30.0))  # pending at Slurm: the book holds it
    owner = ("owner", 2)
    as_held = fair.reclaimer.take(pol, fair.book, {}, owner, PART, 1, NOW, for_job="mine", commit=False)
    assert as_held.victims == ()  # its quota, full of itself, has no room: nothing to take back
    taken = fair.reclaimer.take(pol, fair.book, {}, owner, PART, 1, NOW, for_job="mine", commit=False,
                                not_holding={"mine-a1"})
    assert [v.attempt for v in taken.victims] == ["borrowed-a1"]
    assert taken.reason is not None and taken.reason.startswith("reclaiming 3 borrowed unit(s)")
    # Committed: booked to the job, so asking again (the next scan, or the pass that decides it
    # once withdrawn) preempts nothing more; it waits for those units.
    fair.reclaimer.take(pol, fair.book, {}, owner, PART, 1, NOW, for_job="mine", not_holding={"mine-a1"})
    fair.book.ended("mine-a1", NOW)  # withdrawn: its attempt is over
    again = fair.reclaimer.take(pol, fair.book, {}, owner, PART, 1, NOW + timedelta(seconds=5),
                                for_job="mine", commit=False)
    assert again.victims == ()
    assert again.reason is not None and again.reason.startswith("reclaimed 3 borrowed unit(s)")
    assert [b.for_job for b in fair.reclaimer.state().bookings] == ["mine"]  # what a store keeps


def test_borrowed_work_pending_in_the_queue_is_never_preempted(tmp_path: Path) -> None:
    """Found by a fair-share review on the real Slurm: for one unit of an owner's quota, reclaim
    preempted the flooder's jobs pending in Slurm's queue first (holding nothing, so freeing
    nothing), each costing its place in the queue, and the owner waited a minute longer."""
    from broker.model import AttemptState
    from broker.store import SqliteStore, Submission

    pol = policy(tmp_path)
    store = SqliteStore(tmp_path / "broker.db")
    offer = Offer(site=SiteId("lab"), instance_type="a800", accelerator="A800", count=1, price_per_hour=14.0)
    attempts = {}
    for name, state in (("running", AttemptState.RUNNING), ("queued", AttemptState.PENDING)):
        sent = NOW - timedelta(minutes=5)
        [(borrowed, _)] = store.submit(TenantId("borrower"), [Submission(spec(2))], sent)
        store.transition(borrowed.id, JobState.PLACING, sent)
        created = NOW - timedelta(minutes=5 if name == "running" else 1)  # the queued one: younger
        a = store.create_attempt(borrowed.id, SiteId("lab"), offer, f"tok-{name}", created)
        store.update_attempt(a.id, created, state=state, backend_id=f"slurm-{name}")
        attempts[name] = a.id
    fair = FairQueue()
    fair.observe(pol, store.live_attempts(), NOW, store)
    mine = job("mine", "owner", 2)
    fair.order(pol, [mine], NOW, remember=True)
    snap = PassSnapshot(now=NOW, offers=[], claimed={})
    got = fair.adjust(pol, mine, Decision(Action.WAIT, sent_to_queue(free=0).offer, ("waiting",)), snap)
    assert [v.attempt for v in got.reclaim] == [attempts["running"]], got.reasons
    store.close()


def test_borrowed_work_the_backend_runs_before_a_poll_says_so_is_running_work(tmp_path: Path) -> None:
    """Seen in CI on the real Slurm: the younger borrowed job ran (Slurm had started it, it had
    written its mark), but no status poll had said so yet, so its attempt was still pending in
    the store. Reclaim read it as queued and preempted the older job instead of the younger."""
    from broker.dispatch.offers import OfferReading, started_attempts
    from broker.model import AttemptState
    from broker.store import SqliteStore, Submission

    pol = policy(tmp_path)
    store = SqliteStore(tmp_path / "broker.db")
    offer = Offer(site=SiteId("lab"), instance_type="a800", accelerator="A800", count=1, price_per_hour=14.0)
    attempts = {}
    for name, state, age_min in (("older", AttemptState.RUNNING, 5), ("younger", AttemptState.PENDING, 1)):
        created = NOW - timedelta(minutes=age_min)
        [(borrowed, _)] = store.submit(TenantId("borrower"), [Submission(spec(2))], created)
        store.transition(borrowed.id, JobState.PLACING, created)
        a = store.create_attempt(borrowed.id, SiteId("lab"), offer, f"tok-{name}", created)
        store.update_attempt(a.id, created, state=state, backend_id=f"slurm-{name}")
        attempts[name] = a.id
    live = store.live_attempts()
    fair = FairQueue()
    fair.observe(pol, live, NOW, store)
    mine = job("mine", "owner", 2)
    fair.order(pol, [mine], NOW, remember=True)
    # The capacity reading of this pass: Slurm runs both.
    reading = OfferReading([], started=frozenset({("lab", "slurm-older"), ("lab", "slurm-younger")}))
    snap = PassSnapshot(now=NOW, offers=[], claimed={}, started=started_attempts(reading, live))
    assert snap.started == {attempts["younger"]}  # the one the store has yet to see running
    got = fair.adjust(pol, mine, Decision(Action.WAIT, sent_to_queue(free=0).offer, ("waiting",)), snap)
    assert [v.attempt for v in got.reclaim] == [attempts["younger"]], got.reasons  # the least work lost
    store.close()
