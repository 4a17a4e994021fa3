"""Projected starts, deadline order within priority, and the last responsible moment (issue 15, obs. 2)."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from broker.burst.projection import NEVER_S, minutes, projected_wait_s, queue_key
from broker.fairshare import Demand, TenantState, order
from broker.model import Priority
from broker.policy import load_policy
from broker.sim.jobs import build_jobs
from broker.sim.run import simulate
from broker.sim.scenario import Delay, Scenario
from broker.sim.traces import TraceJob
from tests.fairshare.test_order import CAP, T0, job
from tests.sim.conftest import CONFIGS, POLICY


def test_projection_follows_running_ends_and_the_queue_ahead() -> None:
    # 4 GPUs: 2 free now, running jobs end at t=100 (1 GPU) and t=300 (1 GPU).
    ends = [(100.0, 1), (300.0, 1)]
    assert projected_wait_s(2, ends, [], 2, 0.0) == 0.0
    assert projected_wait_s(2, ends, [], 3, 0.0) == 100.0
    # A 2-GPU job ahead takes the free pair for 500 s: a 2-GPU job then starts when both
    # running jobs have ended (t=300).
    assert projected_wait_s(2, ends, [(2, 500.0)], 2, 0.0) == 300.0
    # ... and a 4-GPU job after it waits for the one ahead to end (t=500).
    assert projected_wait_s(2, ends, [(2, 500.0)], 4, 0.0) == 500.0
    # No backfill: a 1-GPU job waits behind a 4-GPU one (starts at 300, runs 50 s).
    assert projected_wait_s(2, ends, [(4, 50.0)], 1, 0.0) == 350.0
    # A job bigger than the partition never starts; one ahead that can never start holds no one up.
    assert math.isinf(projected_wait_s(2, ends, [], 5, 0.0))
    assert projected_wait_s(2, ends, [(5, 50.0)], 1, 0.0) == 0.0
    # Stops early once past the horizon: only "later than that" is known.
    assert projected_wait_s(0, [(1000.0, 4)], [(4, 9999.0)], 1, 0.0, give_up_after_s=10.0) == 1000.0


def test_deadline_orders_jobs_within_a_priority_and_fair_share_wraps_it() -> None:
    assert queue_key("normal", 100.0, 50.0, "x") < queue_key("normal", 200.0, 0.0, "y")
    assert queue_key("high", 900.0, 0.0, "x") < queue_key("normal", 100.0, 0.0, "y")
    # One tenant: the younger job with the earlier deadline goes first; priority still rules.
    old = replace(job("old", "a", age_s=600), due=T0 + timedelta(hours=4))
    young = replace(job("young", "a", age_s=60), due=T0 + timedelta(minutes=10))
    urgent = replace(job("urgent", "a", age_s=0, prio=Priority.HIGH), due=T0 + timedelta(hours=9))
    ids = [s.job_id for s in order([old, young, urgent], {"a": TenantState()}, CAP)]
    assert ids == ["urgent", "young", "old"]
    # Without deadlines the order is by age, as before.
    plain = [s.job_id for s in order([job("o", "a", age_s=600), job("y", "a", age_s=60)], {}, CAP)]
    assert plain == ["o", "y"]
    assert Demand(1, 0, 0).accelerators == 1


def test_simulator_bursts_a_late_job_at_the_last_responsible_moment(tmp_path: Path) -> None:
    # One GPU, busy for 2 h with A. B (max_wait 30 min) is projected to start after 2 h: late.
    # It waits until its deadline minus the route's provisioning p95 (5 min), then bursts.
    (tmp_path / "cloud.csv").write_text(
        "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,SpotPrice,Region,"
        "AvailabilityZone,Currency\ngpu.small,A800,1,8,64,10.0,,r1,r1-a,CNY\n"
    )
    text = POLICY.format(configs=CONFIGS, gpus=1).replace(
        "  hysteresis: 0s\n", "  hysteresis: 0s\n  wait_model: projected\n  late_wait_factor: 8\n"
    )
    (tmp_path / "policy.yaml").write_text(text)
    policy = load_policy(tmp_path / "policy.yaml")
    scenario = Scenario(seed=1, provisioning=Delay(min_s=60, mode_s=60, max_s=60))
    trace = [
        TraceJob("a", 0, 7200, count=1, accelerators=("A800",), tenant="t1"),
        TraceJob("b", 60, 3600, count=1, accelerators=("A800",), tenant="t1"),
    ]
    sim = simulate(policy, build_jobs(trace, policy, scenario), scenario, baselines=(), lower_bound=False)
    b = sim.runs["policy"].records[1]
    assert b.burst
    # Decided at arrival (wait), then at 60 + 1800 - 300 s (+1 s timer slack): up 60 s later.
    assert b.start_s == pytest.approx(60 + 1800 - 300 + 1 + 60, abs=2)
    assert b.wait_s <= b.max_wait_s


@pytest.mark.parametrize(
    ("wait_s", "said"),
    [(0.0, "0 min"), (28.0, "<1 min"), (45.0, "1 min"), (600.0, "10 min"), (NEVER_S, "∞ min")],
)
def test_a_wait_is_told_in_whole_minutes_and_a_few_seconds_are_not_none(wait_s: float, said: str) -> None:
    """A 28 s wait read "expected wait 0 min", as if the job would start at once."""
    assert minutes(wait_s) == said
