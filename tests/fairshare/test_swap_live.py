"""The live shell of `burst.preempt_patient` (`broker.swap_live.swapped`) on a real burst decision
and a real fair-share book: what it books, what it leaves alone, what explain sees."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from broker.burst.snapshot import PassSnapshot
from broker.decision import Action, Decision
from broker.fair_queue import FairQueue
from broker.fairshare import Demand
from broker.fairshare.book import Holding
from broker.model import Attempt, AttemptId, AttemptState, Job, JobId, TenantId
from broker.policy import Policy
from broker.swap_live import swapped
from tests.burst.test_decision import NOW, job, offers
from tests.burst.test_swap import CHEAP_HOME, PART, a_burst, enabled

SPEC = job(max_wait="5m", runtime="2h")


@pytest.fixture
def policy(tmp_path: Path) -> Policy:
    return enabled(tmp_path)


def fair_running(*ids: str, max_wait_s: float = 4 * 3600.0, due_in: timedelta | None = None) -> FairQueue:
    """A book where patient jobs of `other` started five minutes ago, one A800 each (their start
    deadline `due_in` from now, if given)."""
    fair = FairQueue()
    for aid in ids:
        start = NOW - timedelta(minutes=5)
        due = None if due_in is None else NOW + due_in
        holding = Holding("other", PART, Demand(1, 0, 0), 1, start, None, None, max_wait_s, due=due)
        fair.book.started(aid, holding)
    return fair


def snap(policy: Policy) -> PassSnapshot:
    return PassSnapshot(now=NOW, offers=offers(policy, free=0, wait_s=3 * 3600))


def swap(fair: FairQueue, policy: Policy, decision: Decision, *, commit: bool = True) -> Decision:
    at = snap(policy)
    return swapped(fair.book, fair.reclaimer, policy, "urgent", "lab", SPEC, decision, at, commit=commit)


def test_a_burst_waits_and_stops_one_patient_job_booked_to_it(policy: Policy) -> None:
    fair = fair_running("p1", "p2")
    got = swap(fair, policy, a_burst(policy))
    assert got.action == Action.WAIT and not got.burst
    assert got.offer is not None and got.offer.partition == PART
    assert "burst.preempt_patient" in got.summary
    assert len(got.reclaim) == 1 and got.reclaim[0].tenant == "other"
    victim = got.reclaim[0].attempt
    assert victim not in fair.book.live  # booked to the job: no longer running work
    # The victim is another tenant's: its reason does not name lab's job.
    assert got.reclaim[0].why is not None and "stopped for another tenant's job" in got.reclaim[0].why
    assert "urgent" not in got.reclaim[0].why and "lab" not in got.reclaim[0].why
    state = fair.reclaimer.state()
    assert [(b.attempt_id, b.for_job) for b in state.bookings] == [(victim, "urgent")]
    assert state.levels == {}  # reclaim's waste budget is not charged
    # The next pass, still a burst while the victim stops: it waits for those units, stops no more.
    again = swap(fair, policy, a_burst(policy))
    assert again.action == Action.WAIT and again.reclaim == () and "preempted for it" in again.summary
    assert len(fair.book.live) == 1


def test_explain_books_nothing(policy: Policy) -> None:
    fair = fair_running("p1")
    got = swap(fair, policy, a_burst(policy), commit=False)
    assert got.action == Action.WAIT and [v.attempt for v in got.reclaim] == ["p1"]
    assert "p1" in fair.book.live and fair.reclaimer.state().bookings == ()


def test_work_already_stopping_is_no_candidate(policy: Policy) -> None:
    fair = fair_running("p1")
    fair.reclaimer.book(policy, fair.book, "p1", PART, 1, "someone-else", NOW)
    fair.book.started("p1", fair_running("p1").book.live["p1"])  # (a book that still counts it)
    assert swap(fair, policy, a_burst(policy)).burst


def test_impatient_work_is_left_running_and_the_job_bursts(policy: Policy) -> None:
    fair = fair_running("p1", max_wait_s=600.0)
    assert swap(fair, policy, a_burst(policy)).burst
    assert "p1" in fair.book.live


def test_work_near_its_own_deadline_is_left_running(tmp_path: Path) -> None:
    """`min_slack` 1h: a job whose start deadline is 20 minutes away is not stopped (it could not
    start again in time); one with 3 hours left is."""
    policy = enabled(tmp_path, min_slack="1h")
    near = fair_running("p1", due_in=timedelta(minutes=20))
    assert swap(near, policy, a_burst(policy)).burst and "p1" in near.book.live
    far = fair_running("p1", due_in=timedelta(hours=3))
    got = swap(far, policy, a_burst(policy), commit=False)
    assert got.action == Action.WAIT and [v.attempt for v in got.reclaim] == ["p1"]


def test_the_live_book_holds_each_jobs_start_deadline(tmp_path: Path) -> None:
    """A job the dispatcher starts on-prem is held with its due (arrival + max_wait), which
    `min_slack` reads: submitted 2 h 50 min ago with a 3 h max_wait, it is 10 minutes from it."""
    policy = enabled(tmp_path, min_slack="30m")
    home = next(o for o in offers(policy, free=1, wait_s=0) if o.partition == PART)
    spec = job(max_wait="3h", runtime="2h")
    submitted = NOW - timedelta(hours=2, minutes=50)
    fair = FairQueue()
    for n in (1, 2):
        created = submitted if n == 1 else NOW - timedelta(minutes=30)
        owner = Job(
            id=JobId(f"j{n}"), tenant=TenantId("other"), spec=spec, created_at=created, updated_at=created
        )
        attempt = Attempt(
            id=AttemptId(f"j{n}-a1"), job_id=owner.id, number=1, site=home.site, offer=home, token="t" * 32,
            created_at=NOW - timedelta(minutes=5), updated_at=NOW, state=AttemptState.RUNNING,
        )
        fair.started(policy, owner, attempt)
    assert fair.book.live["j1-a1"].due == submitted + timedelta(hours=3)
    got = swap(fair, policy, a_burst(policy), commit=False)
    assert [v.attempt for v in got.reclaim] == ["j2-a1"]  # j1 could not start again in time


def test_another_tenants_work_within_its_quota_is_not_stopped(tmp_path: Path) -> None:
    """`other` is guaranteed one A800: its job runs in quota, and only its own jobs stop it."""
    text = CHEAP_HOME.replace(
        "  - {id: lab, kind: partner, entity_country: SG}\n",
        "  - {id: lab, kind: partner, entity_country: SG}\n"
        "  - {id: other, kind: partner, entity_country: SG, share: {quota: {onprem/a800: 1}}}\n",
    )
    policy = enabled(tmp_path, text)
    assert swap(fair_running("p1"), policy, a_burst(policy)).burst
    fair = fair_running("p1", "p2")  # its second job is borrowed: that one may go
    got = swap(fair, policy, a_burst(policy), commit=False)
    assert [v.attempt for v in got.reclaim] == ["p2"]


def test_the_route_slot_the_burst_took_in_the_pass_is_given_back(policy: Policy) -> None:
    """The pass recorded the burst's launch (`decide_in_pass`: one more instance provisioning on its
    route, which counts against `max_provisioning` for the pass's next jobs). A burst that waits for
    stopped work instead launches nothing: the slot is free again, on both passes."""
    fair = fair_running("p1")
    decision = a_burst(policy)
    assert decision.offer is not None
    site = decision.offer.site
    for expected_reclaim in (1, 0):  # the pass that stops p1, then the next one while it stops
        at = snap(policy)
        at.launch("lab", decision.offer)
        assert at.routes[site].provisioning == 1
        got = swapped(fair.book, fair.reclaimer, policy, "urgent", "lab", SPEC, decision, at)
        assert got.action == Action.WAIT and len(got.reclaim) == expected_reclaim
        assert at.routes[site].provisioning == 0
    at = snap(policy)  # explain (commit False) records no launch, so it gives none back
    at.launch("someone", decision.offer)
    swapped(
        fair_running("p2").book,
        FairQueue().reclaimer,
        policy,
        "urgent",
        "lab",
        SPEC,
        decision,
        at,
        commit=False,
    )
    assert at.routes[site].provisioning == 1


def test_a_burst_waiting_for_work_reclaimed_for_its_quota_says_reclaimed(tmp_path: Path) -> None:
    """Fair-share reclaim (not a swap) preempted borrowed work for the job's quota; its next
    decision bursts while that work stops: it waits for those units, not saying patient work was
    stopped for it (none was: borrowed work was reclaimed)."""
    text = CHEAP_HOME.replace(
        "  - {id: lab, kind: partner, entity_country: SG}\n",
        "  - {id: lab, kind: partner, entity_country: SG, share: {quota: {onprem/a800: 1}}}\n",
    )
    policy = enabled(tmp_path, text)
    fair = fair_running("p1")
    taken = fair.reclaimer.take(policy, fair.book, {}, ("lab", 1), PART, 0, NOW, for_job="urgent")
    assert [v.attempt for v in taken.victims] == ["p1"]
    got = swap(fair, policy, a_burst(policy))
    assert got.action == Action.WAIT and got.reclaim == ()
    assert "patient work" not in got.summary and "preempted for it" in got.summary, got.summary


def test_work_pending_in_its_backends_queue_is_no_candidate(policy: Policy) -> None:
    """Review of #14: a patient job still pending in Slurm's queue holds no unit, so stopping it
    for a burst frees nothing: the job bursts. Once the backend runs it (before a poll says so,
    `PassSnapshot.started`) it may be stopped."""
    fair = FairQueue()
    start = NOW - timedelta(minutes=5)
    fair.book.started("q1", Holding("other", PART, Demand(1, 0, 0), 1, start, None, None, 4 * 3600.0,
                                    queued=True))
    burst = a_burst(policy)
    assert swap(fair, policy, burst) == burst
    assert "q1" in fair.book.live and fair.reclaimer.state().bookings == ()
    at = snap(policy)
    at.started = frozenset({"q1"})
    got = swapped(fair.book, fair.reclaimer, policy, "urgent", "lab", SPEC, burst, at, commit=False)
    assert got.action == Action.WAIT and [v.attempt for v in got.reclaim] == ["q1"]


@pytest.mark.parametrize(
    ("heavy", "units", "more", "stopped"),
    [("lab", 6, 0, False), ("lab", 5, 1, False), ("lab", 4, 1, True), ("lab", 5, 2, True),
     ("other", 6, 0, True), ("", 0, 0, True)],
)
def test_a_tenant_far_over_its_share_does_not_stop_the_work_of_one_under_it(
    policy: Policy, heavy: str, units: int, more: int, stopped: bool
) -> None:
    """The dispatcher's pass: `heavy` holds `units` of the 8 A800s and `other` `more` (impatient
    work, no candidate) beside one patient job. `lab`'s urgent job, about to burst, stops `other`'s
    job unless `lab` is over its share (ratio above 1, the pass's fair-share order's) and at least
    `burst.firm_deadline_share_gap` (2) times `other`'s: an over-share tenant's cost-driven swap
    does not take the work of a tenant fair share owes. At 5 units to 3 (1.67 times) it still does,
    and at 4 to 2 (2 times, lab at exactly its share) too."""
    fair = fair_running("p1")
    ten_hours = NOW - timedelta(hours=10)
    if heavy:
        fair.book.started("h1", Holding(heavy, PART, Demand(units, 0, 0), units, ten_hours, None, None, 0.0))
    if more:
        fair.book.started("o1", Holding("other", PART, Demand(more, 0, 0), more, ten_hours, None, None, 0.0))
    urgent = Job(id=JobId("urgent"), tenant=TenantId("lab"), spec=SPEC, created_at=NOW, updated_at=NOW)
    fair.order(policy, [urgent], NOW, remember=True)
    assert policy.burst.firm_deadline_share_gap == 2
    lab = units / (1 + more) * fair.ratios["other"] if heavy == "lab" else 0.0  # (6, 2.5, 2, 1.67 times)
    assert fair.ratios["lab"] == pytest.approx(lab)
    got = fair.adjust(policy, urgent, a_burst(policy), snap(policy))
    assert got.burst != stopped and [v.attempt for v in got.reclaim] == (["p1"] if stopped else [])
    assert ("p1" in fair.book.live) != stopped
