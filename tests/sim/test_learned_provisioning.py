"""The simulator times its cloud launches as the live broker does, and a late job's burst leads
its deadline by the route's observed provisioning p95 where that is longer than the policy's
(tests/burst/test_provisioning_learned.py has the rule; this, what it changes in a run)."""

from __future__ import annotations

from pathlib import Path

from broker.burst.provisioning import MIN_LAUNCHES
from broker.sim.jobs import build_jobs
from broker.sim.run import simulate
from broker.sim.scenario import Delay, Scenario
from tests.sim.test_projected_wait import a800, projected_policy


def test_bursts_come_up_in_time_once_the_route_is_seen_to_be_slow(tmp_path: Path) -> None:
    # The only GPU is busy for 20 h; a job every 10 min, each projected late (max_wait 30 min),
    # bursts at its last responsible moment. The policy states no provisioning_p95 (5 min), but
    # the route's instances take 6.5-7 min: timed on 5 min, each burst starts its job late.
    policy = projected_policy(tmp_path)
    scenario = Scenario(seed=3, provisioning=Delay(min_s=390, mode_s=405, max_s=420))
    trace = [a800("blocker", 0, 20 * 3600), *(a800(f"j{i}", 60 + 600 * i, 3600) for i in range(24))]
    run = simulate(policy, build_jobs(trace, policy, scenario), scenario, baselines=(), lower_bound=False)
    bursts = run.runs["policy"].records[1:]
    assert all(r.burst for r in bursts)
    over = [r.wait_s - r.max_wait_s for r in bursts]
    # Before the route has MIN_LAUNCHES launches, the policy's 5 min: 1.5-2 min late.
    assert all(90 <= s <= 121 for s in over[:MIN_LAUNCHES]), over
    # Once it has them (and a job decided since), its observed p95: on time, at most the 1 s
    # its timer fires after the moment.
    assert all(s <= 1.0 for s in over[MIN_LAUNCHES + 3 :]), over
