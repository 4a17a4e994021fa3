"""Capacity held for a waiting under-share job survives from pass to pass (issue 14).

A flooding tenant's new 1-GPU jobs keep arriving while a small tenant's 4-GPU job waits for
GPUs to free one by one: the freed GPUs must accumulate for the small job, not go to each
arrival (an arrival's pass does not see the waiting job, so the hold is remembered).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.fairshare.holds import Hold, Holds
from broker.policy import load_policy
from broker.sim.jobs import build_jobs
from broker.sim.run import simulate
from broker.sim.scenario import Scenario
from broker.sim.traces import TraceJob
from tests.sim.conftest import CATALOG, CONFIGS, POLICY


def test_freed_gpus_accumulate_for_the_waiting_small_job_despite_new_arrivals(tmp_path: Path) -> None:
    (tmp_path / "cloud.csv").write_text(CATALOG)
    text = POLICY.format(configs=CONFIGS, gpus=8).replace(
        "  - {id: t1, kind: university, entity_country: CN, monthly_budget: 100000}\n",
        "  - {id: t1, kind: university, entity_country: CN, monthly_budget: 0}\n"
        "  - {id: t2, kind: university, entity_country: CN, monthly_budget: 0}\n",
    )
    (tmp_path / "policy.yaml").write_text(text)
    policy = load_policy(tmp_path / "policy.yaml")
    day = 86400
    # t1 fills the 8 GPUs at t=0; they free one every 10 minutes. t2's 4-GPU job comes at
    # t=60 s, and t1 submits a new 1-GPU job every 5 minutes from t=120 s. No budget: nobody
    # bursts, everyone may wait a day.
    trace = [
        *(
            TraceJob(
                f"fill{i}", 0, 600 * (i + 1), count=1, accelerators=("A800",), tenant="t1", max_wait_s=day
            )
            for i in range(8)
        ),
        TraceJob("small", 60, 3600, count=4, accelerators=("A800",), tenant="t2", max_wait_s=day),
        *(
            TraceJob(
                f"more{i}", 120 + 300 * i, 3600, count=1, accelerators=("A800",), tenant="t1", max_wait_s=day
            )
            for i in range(12)
        ),
    ]
    scenario = Scenario(seed=1)
    jobs = build_jobs(trace, policy, scenario)
    sim = simulate(policy, jobs, scenario, baselines=(), lower_bound=False, parallel=False)
    records = sim.runs["policy"].records
    small = next(r for j, r in zip(jobs, records, strict=True) if j.tenant == "t2")
    # The 4th GPU frees at 40 min: the small job starts then, not after the arrivals drained.
    assert small.wait_s == pytest.approx(2400 - 60)
    assert sim.result["strategies"]["policy"]["tenants"]["t1"]["never_started"] == 0


def test_a_hold_blocks_only_jobs_behind_its_holder() -> None:
    holds = Holds()
    holds.put("onprem/gpu", Hold("j-small", "small", 4, in_quota=False))
    ratios = {"small": 0.2, "flood": 2.5, "tiny": 0.1}
    assert holds.blocking("j-flood", "flood", ratios) == {"onprem/gpu": 4}
    assert holds.blocking("j-tiny", "tiny", ratios) == {}  # further under its share: goes ahead
    assert holds.blocking("j-small2", "small", ratios) == {}  # the holder's own tenant
    holds.put("onprem/gpu", Hold("j-small", "small", 4, in_quota=True))
    assert holds.blocking("j-tiny", "tiny", ratios) == {"onprem/gpu": 4}  # quota work goes first
    holds.drop_unless(gone="j-small")
    assert not holds and holds.blocking("j-flood", "flood", ratios) == {}
