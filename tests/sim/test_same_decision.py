"""The live dispatcher's `Planner.decide` and the simulator decide through one shared function."""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path

import broker.planning
import broker.sim.strategies
from broker.burst.snapshot import PassSnapshot
from broker.burst.step import decide_in_pass
from broker.clock import Clock, ManualClock
from broker.model import Job, JobId, TenantId
from broker.planning import Planner
from broker.policy import PolicyWatcher
from broker.sim.engine import Engine
from broker.sim.jobs import EPOCH, build_jobs
from broker.sim.scenario import Scenario
from broker.sim.strategies import PolicyStrategy
from broker.sim.traces import TraceJob
from tests.sim.conftest import CONFIGS


class _Clock(Clock):  # type: ignore[misc]
    pass


def test_one_shared_function() -> None:
    assert broker.planning.decide_in_pass is decide_in_pass
    assert broker.sim.strategies.decide_in_pass is decide_in_pass


def test_planner_and_simulator_decide_alike(tmp_path: Path) -> None:
    # Under the fluid wait model, as before policy-sim.yaml went projected: the live projection
    # reads the store's runtime history, which this store-less comparison has not (the live
    # projected path is tested in tests/clouds/test_projected_wait_live.py).
    for item in CONFIGS.iterdir():
        (tmp_path / item.name).symlink_to(item)
    path = tmp_path / "policy-fluid.yaml"
    text = (CONFIGS / "policy-sim.yaml").read_text()
    projected = "  wait_model: projected\n  late_wait_factor: 1.5\n"
    fluid = text.replace(projected, "  wait_model: fluid\n  late_wait_factor: 1.0\n")
    assert fluid != text
    path.write_text(fluid)
    watcher = PolicyWatcher(path)
    policy = watcher.current
    planner = Planner(watcher, ManualClock(EPOCH))
    scenario = Scenario(seed=3, onprem_gpus=16)
    trace = [
        TraceJob(f"j{i}", i * 30.0, 3600 * (1 + i % 3), count=8 if i % 2 else 4, tenant="pku-nlp")
        for i in range(8)
    ]
    jobs = build_jobs(trace, policy, scenario)
    engine = Engine(policy, jobs, scenario, PolicyStrategy(policy))
    for key in engine.parts:  # fill on-prem so that waits and bursts are in play
        part = engine.parts[key]
        if part.accelerated:
            part.start(part.total, 5400.0)
    strategy = PolicyStrategy(policy)
    for sim_job in jobs:
        now = sim_job.created_at + timedelta(minutes=40)
        snap = PassSnapshot(
            now=now,
            offers=engine.book.offers(2400.0 + sim_job.arrival_s),
            capacity_total=engine.book.totals,
            routes=engine.clouds.states(0.0, now),
        )
        snap.money[sim_job.tenant] = engine.ledger.money(sim_job.tenant, now)
        live, simulated = copy.deepcopy(snap), copy.deepcopy(snap)
        job = Job(
            id=JobId(sim_job.id),
            tenant=sim_job.tenant,
            spec=sim_job.spec,
            created_at=sim_job.created_at,
            updated_at=sim_job.created_at,
        )
        a = planner.decide(job, live, store=None)  # type: ignore[arg-type]
        b = strategy.decide(sim_job, simulated, simulated.money[sim_job.tenant], None)
        assert (a.action, a.offer, a.reasons, a.facts, a.burst) == (
            b.action,
            b.offer,
            b.reasons,
            b.facts,
            b.burst,
        )
        assert (live.claimed, live.backlog_h) == (simulated.claimed, simulated.backlog_h)


def test_planner_gives_a_firm_deadline_to_a_tenant_held_back_by_a_far_over_share_one() -> None:
    # The live planner sets BurstInputs.firm_deadline from its fair-share pass's ratios, by the
    # same rule as the simulator (broker.fairshare.held_back, burst.firm_deadline_share_gap 2).
    watcher = PolicyWatcher(CONFIGS / "policy-sim.yaml")
    planner = Planner(watcher, ManualClock(EPOCH))
    assert watcher.current.burst.firm_deadline_share_gap == 2.0
    engine = Engine(watcher.current, [], Scenario(seed=3, onprem_gpus=16), PolicyStrategy(watcher.current))
    now = EPOCH
    snap = PassSnapshot(now=now, offers=engine.book.offers(0.0), capacity_total=engine.book.totals)
    planner.fair.ratios = {"zhipu-sme": 1.8, "pku-nlp": 0.2, "sg-partner": 1.0}
    firm = {}
    for tenant in planner.fair.ratios:
        snap.money[tenant] = engine.ledger.money(tenant, now)
        store = None  # the pass's money is already in the snapshot: no store read
        inputs = planner.inputs_for(
            TenantId(tenant), snap, store, queued_since=now, pending_since=None  # type: ignore[arg-type]
        )
        firm[tenant] = inputs.firm_deadline
    assert firm == {"zhipu-sme": False, "pku-nlp": True, "sg-partner": False}
