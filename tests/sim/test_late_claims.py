"""Premium-aware choice of which job bursts, in the simulator (issue 15, obs. 2): when capacity
frees, a job that could take it yields to a late job set to burst whose burst would cost more
(the clairvoyant offline schedule bursts the cheapest premiums). Asserts outcomes, not timings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from broker.burst import is_onprem
from broker.burst.snapshot import PassSnapshot
from broker.clock import ManualClock
from broker.decision import Action
from broker.model import AcceleratorRequest, JobSpec, Resources, TenantId
from broker.planning import Planner
from broker.policy import PolicyWatcher
from broker.sim.jobs import build_jobs
from broker.sim.metrics import late
from broker.sim.run import simulate
from broker.sim.scenario import Delay, Scenario
from broker.store import SqliteStore, Submission
from tests.sim.test_projected_wait import a800, projected_policy

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def test_the_short_job_bursts_and_the_long_late_one_keeps_the_gpu(tmp_path: Path) -> None:
    # One GPU (2 CNY/h on-prem, 10 CNY/h in the cloud), busy with A until t=1,200 s. S (50 min)
    # arrives at 60 s and is first in line by deadline; L (10 h) arrives at 120 s and, behind S,
    # is projected to start 38 min past its max_wait, so it is set to burst at its last
    # responsible moment (~80 CNY over on-prem). When A ends, S (~7 CNY over on-prem in the
    # cloud) yields the GPU to L and bursts itself in time. Before: S took the GPU, L burst.
    policy = projected_policy(tmp_path)
    scenario = Scenario(seed=1, provisioning=Delay(min_s=60, mode_s=60, max_s=60))
    trace = [a800("a", 0, 1200), a800("s", 60, 3000), a800("l", 120, 36000)]
    sim = simulate(policy, build_jobs(trace, policy, scenario), scenario, baselines=(), lower_bound=False)
    a, s, l_ = sim.runs["policy"].records
    assert not l_.burst and l_.start_s == 1200.0
    assert s.burst and not late(s)
    assert not any(late(r) for r in (a, s, l_))
    assert sum(r.cost for r in (a, s, l_)) < 2 * 1200 / 3600 + 10 * 3000 / 3600 + 2 * 10 + 1e-6


def test_the_live_planner_yields_to_a_late_claim_too(tmp_path: Path) -> None:
    # The same swap through the live planner (broker/planning.py, broker/dispatch/waits.py):
    # pass 1, the GPU is busy with foreign work for 75 min, so L (10 h) is set to burst at its
    # last responsible moment and its late claim is kept; pass 2, the GPU is free: S (50 min),
    # first in the pass, yields it, and L, decided next, starts on it.
    policy = projected_policy(tmp_path)
    planner = Planner(PolicyWatcher(tmp_path / "policy.yaml"), ManualClock(NOW))
    store = SqliteStore(tmp_path / "broker.db")
    [(long_job, _)] = store.submit(
        TenantId("t1"), [Submission(gpu_spec(10 * 60))], NOW - timedelta(minutes=1)
    )
    planner.order_queue([long_job], NOW, full=True)
    first = planner.decide(long_job, snapshot(planner, NOW, free=0), store)
    assert first.action == Action.WAIT and first.facts.burst_in_s is not None  # committed, late
    later = NOW + timedelta(minutes=5)
    [(short_job, _)] = store.submit(TenantId("t1"), [Submission(gpu_spec(50))], later - timedelta(minutes=1))
    planner.order_queue([short_job, long_job], later, full=True)
    snap = snapshot(planner, later, free=1)
    short = planner.decide(short_job, snap, store)
    assert short.action == Action.WAIT and short.reasons[0].startswith("yielding onprem/gpu")
    long_ = planner.decide(long_job, snap, store)
    assert long_.action == Action.RUN and long_.offer is not None and long_.offer.partition == "onprem/gpu"
    assert policy.burst.wait_model == "projected"
    store.close()


def gpu_spec(minutes: int) -> JobSpec:
    return JobSpec(
        name="train",
        command=("true",),
        runtime_estimate=timedelta(minutes=minutes),
        resources=Resources(accelerators=AcceleratorRequest(count=1, any_of=("A800",))),
    )


def snapshot(planner: Planner, now: datetime, *, free: int) -> PassSnapshot:
    """A pass snapshot whose on-prem partition reports `free` units (busy ones free in 75 min)."""
    offers = [
        o.model_copy(update={"free": free, "expected_wait_s": 75 * 60.0})
        if is_onprem(planner.policy, o.site)
        else o
        for o in planner.catalog_offers()
    ]
    snap = PassSnapshot(now=now, offers=offers, capacity_total={"onprem/gpu": 1})
    planner.waits.noted(snap, [])
    return snap
