"""Jobs whose GPU count is not a power of two (3, 5, 6, 7 on an 8-GPU node) are priced at what
they hold: on-prem is priced per accelerator-hour and Slurm and the local executor give a job
exactly its count, so a 3-GPU job pays for 3 GPUs, not for the next slot of 4."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.policy.offers import static_offers
from broker.sim.jobs import build_jobs
from broker.sim.run import simulate
from broker.sim.scenario import Scenario
from broker.sim.traces import TraceJob
from tests.sim.conftest import tiny_policy


@pytest.mark.parametrize("count", [3, 5, 6, 7])
def test_an_odd_count_pays_for_its_gpus_on_prem(tmp_path: Path, scenario: Scenario, count: int) -> None:
    policy = tiny_policy(tmp_path, gpus=8, wait_model="fluid")
    jobs = build_jobs([TraceJob("a", 0, 3600, count=count, accelerators=("A800",), tenant="t1")],
                      policy, scenario)
    sim = simulate(policy, jobs, scenario, per_strategy_bounds=True)
    for name in ("policy", "onprem-only"):
        assert sim.result["strategies"][name]["cost"] == pytest.approx(2.0 * count), name
    assert sim.result["lower_bound_cost"] == pytest.approx(2.0 * count)
    assert sim.result["offline_cost"] == pytest.approx(2.0 * count)


def test_default_slots_offer_every_count_up_to_the_node(tmp_path: Path) -> None:
    policy = tiny_policy(tmp_path, gpus=8)
    counts = sorted(o.count for o in static_offers(policy) if o.site == "onprem")
    assert counts == list(range(1, 9))
