"""The projection note on a live decision (explain, job events) describes the partition the
decision weighed, and lists the soonest running ends as the pass starts more jobs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from broker.burst import BurstInputs, decide
from broker.burst.snapshot import PassSnapshot
from broker.decision import Action, Decision, DecisionFacts
from broker.dispatch.waits import LiveWaits
from broker.model import Job, JobId, Offer, SiteId, TenantId
from broker.policy import Policy, load_policy, load_policy_text
from broker.policy.offers import static_offers
from broker.store import JobStore, SqliteStore
from tests.burst.conftest import POLICY, write_policy
from tests.burst.test_decision import job
from tests.store.test_runtime_ratios import A800, NOW, gpu_job, running

CPU = Offer(
    site=SiteId("onprem"), instance_type="cpu", accelerator=None, count=64, price_per_hour=1.0, free=64
)
H800 = Offer(
    site=SiteId("onprem"), instance_type="h800", accelerator="H800", count=8, price_per_hour=20.0,
    free=0, expected_wait_s=7200.0,
)
CLOUD = Offer(site=SiteId("aws-east"), instance_type="p4d.24xlarge", accelerator="A100", count=8,
              price_per_hour=32.77)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    opened = SqliteStore(tmp_path / "broker.db")
    yield opened
    opened.close()


@pytest.fixture
def policy(tmp_path: Path) -> Policy:
    path = write_policy(tmp_path, POLICY.replace("burst:\n", "burst:\n  wait_model: projected\n", 1))
    return load_policy_text(path.read_text(), str(path))


def burst(wait_s: float, partition: str) -> Decision:
    """A burst to the cloud after weighing `partition`'s on-prem wait of `wait_s` (as decide() records it)."""
    facts = DecisionFacts(onprem_site="onprem", onprem_partition=partition, onprem_expected_wait_s=wait_s)
    return Decision(Action.RUN, CLOUD, burst=True, facts=facts)


def test_a_burst_is_explained_by_the_partition_whose_projected_wait_it_weighed(
    store: JobStore, policy: Policy
) -> None:
    """A CPU partition (free) and two GPU ones: A800 frees in 30 min (a running broker job),
    H800 in 2 h (foreign work). Each burst's note names the GPU partition its facts name, even
    when its wait was raised past both projections (the last responsible moment), and gives that
    partition's projection, not the raised wait (explain12: it read as a longer projection)."""
    snap = PassSnapshot(
        now=NOW, offers=[CPU, A800, H800],
        capacity_total={CPU.partition: 64, A800.partition: 8, H800.partition: 8},
    )
    waits = LiveWaits()
    waits.noted(snap, [running(store, "lab", NOW - timedelta(minutes=30))])
    projected = waits.for_job(policy, gpu_job("big", 1.0), snap, store, frozenset())
    assert projected == {A800.partition: pytest.approx(1800.0), H800.partition: pytest.approx(7200.0)}
    cases = [
        (7200.0, H800.partition, 0, 1),
        (1800.0, A800.partition, 0, 1),
        (7300.0, H800.partition, 0, 1),  # raised to the last responsible moment
        (7300.0, A800.partition, 0, 1),  # the shorter wait, raised past the longer one
    ]
    for wait_s, partition, free, running_jobs in cases:
        note = waits.explained(burst(wait_s, partition), snap, "lab", store, projected=projected).projection
        assert note is not None, wait_s
        assert (note.partition, note.wait_s, note.free_units, note.running_jobs) == (
            partition, round(projected[partition]), free, running_jobs
        ), wait_s
    # A wait names its partition itself; a decision not made on a projection gets no note.
    facts = DecisionFacts(onprem_site="onprem", onprem_partition=H800.partition, onprem_expected_wait_s=7200)
    waiting = Decision(Action.WAIT, H800, facts=facts)
    note = waits.explained(waiting, snap, "lab", store, projected=projected).projection
    assert note is not None and note.partition == H800.partition
    assert waits.explained(burst(7200.0, H800.partition), snap, "lab", store, projected={}).projection is None
    unnamed = Decision(Action.RUN, CLOUD, burst=True, facts=DecisionFacts(onprem_site="onprem"))
    assert waits.explained(unnamed, snap, "lab", store, projected=projected).projection is None


def test_the_note_lists_the_soonest_ends_including_jobs_this_pass_started(
    store: JobStore, policy: Policy
) -> None:
    """The soonest ends are kept once per view; a job the pass starts sooner than them shows up."""
    free_a800 = A800.model_copy(update={"free": 8})
    snap = PassSnapshot(now=NOW, offers=[free_a800], capacity_total={A800.partition: 16})
    waits = LiveWaits()
    waits.noted(snap, [running(store, "lab", NOW - timedelta(minutes=30))])  # 8 units, 30 min left
    waits.begin_pass(full=True)
    facts = DecisionFacts(onprem_site="onprem", onprem_partition=A800.partition, onprem_expected_wait_s=0)
    asked = Decision(Action.WAIT, A800, facts=facts)
    projected = waits.for_job(policy, gpu_job("a", 1.0), snap, store, frozenset())
    first = waits.explained(asked, snap, "lab", store, projected=projected).projection
    assert first is not None and first.running == ((8, 1800),)
    quick = Job(id=JobId("quick"), tenant=TenantId("lab"), spec=gpu_job("quick", 0.25), created_at=NOW,
                updated_at=NOW)
    waits.record(quick, Decision(Action.RUN, free_a800), policy, snap, store, 1)
    projected = waits.for_job(policy, gpu_job("b", 1.0), snap, store, frozenset())
    second = waits.explained(asked, snap, "lab", store, projected=projected).projection
    assert second is not None and second.running == ((8, 900), (8, 1800)) and second.running_jobs == 2


TWO = POLICY.replace(
    "      - {name: a800, accelerator: A800, count_per_node: 8, price_hour: 14.0}\n",
    "      - {name: dear, accelerator: A800, count_per_node: 8, price_hour: 20.0}\n"
    "      - {name: thrifty, accelerator: A800, count_per_node: 8, price_hour: 14.0}\n",
).replace("burst:\n", "burst:\n  wait_model: projected\n", 1)


def test_a_burst_weighing_one_of_two_equal_projections_is_explained_by_that_one(
    store: JobStore, tmp_path: Path
) -> None:
    """Two A800 partitions, both busy with foreign work for exactly 2 h: equal projected waits.
    decide() weighs the cheaper one (`thrifty`) and records it; the note names it, where a guess
    from the rounded wait would take the first by name (`dear`)."""
    policy = load_policy(write_policy(tmp_path, TWO))
    offers = [
        o.model_copy(update={"free": 0, "expected_wait_s": 7200.0}) if o.site == "onprem" else o
        for o in static_offers(policy, read_at=NOW)
    ]
    snap = PassSnapshot(now=NOW, offers=offers, capacity_total={"onprem/dear": 8, "onprem/thrifty": 8})
    waits = LiveWaits()
    waits.noted(snap, [])
    spec = job(("A800", "A10"), max_wait="30m")
    projected = waits.for_job(policy, spec, snap, store, frozenset())
    assert projected == {"onprem/dear": pytest.approx(7200.0), "onprem/thrifty": pytest.approx(7200.0)}
    inputs = BurstInputs(now=NOW, queued_since=NOW - timedelta(minutes=29), projected_wait=projected)
    decision = decide(spec, TenantId("lab"), offers, policy, inputs)
    assert decision.action == Action.RUN and decision.burst, decision.reasons
    assert decision.facts.onprem_partition == "onprem/thrifty"
    note = waits.explained(decision, snap, "lab", store, projected=projected).projection
    assert note is not None and note.partition == "onprem/thrifty"
    assert (note.free_units, note.running_jobs) == (0, 1)  # the foreign work, ending in 2 h


def test_a_job_past_its_expected_end_keeps_the_jobs_behind_it_waiting_more_than_0_s(
    store: JobStore, policy: Policy
) -> None:
    """A 1 h estimate that has run 70 min (ratio 1, no history): it is expected to run on as long
    as it has overrun, a minute at least, never to end 'now' (a 0 s wait that never made the job
    behind it late however long the overrun lasted)."""
    snap = PassSnapshot(now=NOW, offers=[A800], capacity_total={A800.partition: 8})
    for tenant, ran_min, left_s in (("lab", 60.5, 60.0), ("poor", 70, 600.0), ("vouchered", 180, 7200.0)):
        waits = LiveWaits()  # (one tenant each: a store holds one such running job per tenant)
        waits.noted(snap, [running(store, tenant, NOW - timedelta(minutes=ran_min))])
        projected = waits.for_job(policy, gpu_job("next", 1.0), snap, store, frozenset())
        assert projected == {A800.partition: pytest.approx(left_s)}, ran_min
        d = Decision(Action.WAIT, A800, facts=DecisionFacts(onprem_partition=A800.partition,
                                                             onprem_expected_wait_s=left_s))
        note = waits.explained(d, snap, tenant, store, projected=projected).projection
        assert note is not None and note.running == ((8, round(left_s)),), note
