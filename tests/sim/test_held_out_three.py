"""A held-out three-job trace through `szb simulate` as a user runs it: every figure by hand.

One A800 on-prem at 3 CNY/h (400 W, 100 g/kWh), one cloud A800 at 8 CNY/h (500 g/kWh), the fluid
wait model, 30 min max_wait by default. A (0 s, 2 h) runs on-prem at once: 6 CNY. B (600 s, 1 h)
would wait 6600 s for A, so it bursts: 8 CNY. C (1200 s, 30 min, may wait 3 h) waits 6000 s for A:
1.5 CNY. Carbon: 2.5 h x 0.4 kW x 100 g + 1 h x 0.4 kW x 500 g = 0.3 kg.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sim.conftest import CONFIGS, table_row

CATALOG = """\
InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,SpotPrice,Region,AvailabilityZone,Currency
gpu.small,A800,1,8,64,8.0,,r1,r1-a,CNY
"""

POLICY = f"""version: 1
currency: CNY
objective: {{price: 1.0, wait_hour_cost: 40, carbon_g_cost: 0.0, preference: 1.0}}
accelerators: {CONFIGS}/accelerators.yaml
regimes: {CONFIGS}/regimes.yaml
sites:
  - id: onprem
    adapter: slurm
    provider: onprem
    region: here
    country: CN
    residency: cn-mainland
    carbon_gco2_kwh: 100
    partitions:
      - {{name: gpu, accelerator: A800, count_per_node: 1, nodes: 1, price_hour: 3.0,
          cpus_per_node: 64, memory_gb_per_node: 512}}
  - id: cloud
    adapter: alibaba
    provider: aliyun-cn
    region: r1
    country: CN
    residency: cn-mainland
    carbon_gco2_kwh: 500
    catalog: {{file: cloud.csv, region: r1, currency: CNY}}
tenants:
  - {{id: t1, kind: university, entity_country: CN, monthly_budget: 100000}}
burst:
  max_wait: {{default: 30m}}
  hysteresis: 0s
  wait_model: fluid
compliance:
  residency:
    zones: {{cn-mainland: {{countries: [CN]}}}}
"""

TRACE = (
    "submit_time,runtime,accelerator,count,tenant,max_wait\r\n"
    "0,2h,A800,1,t1,\r\n600,1h,A800,1,t1,30m\r\n1200,1800,A800,1,t1,3h\r\n"
)


def _szb(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "broker.cli", "simulate", "--trace", str(folder / "three.csv"),
               "--policy", str(folder / "policy.yaml"), "--baselines", "all", *args]  # fmt: skip
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=120, check=True)


def test_held_out_three_jobs_json_table_and_summary(tmp_path: Path) -> None:
    (tmp_path / "cloud.csv").write_text(CATALOG)
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "three.csv").write_bytes(b"\xef\xbb\xbf" + TRACE.encode())  # a BOM and CRLF lines too
    out = json.loads(_szb(tmp_path, "--output", "json", "--report", str(tmp_path / "rep")).stdout)
    s = out["strategies"]
    p, o, c = s["policy"], s["onprem-only"], s["cloud-cheapest"]
    assert (p["cost"], p["cost_onprem"], p["cost_cloud"]) == pytest.approx((15.5, 7.5, 8.0))
    assert (p["slo_attainment"], p["burst_fraction"], p["carbon_kg"]) == pytest.approx((1.0, 0.3333, 0.3))
    # onprem-only: B waits 6600 s (late), C 9600 s (within its 3 h); 3.5 GPU-hours at 100 g/kWh.
    assert (o["cost"], o["p50_wait_s"], o["slo_attainment"], o["late_jobs"]) == pytest.approx(
        (10.5, 6600.0, 0.6667, 1)
    )
    assert o["p95_wait_s"] == pytest.approx(6600 + 0.9 * 3000) and o["carbon_kg"] == pytest.approx(0.1)
    # cloud-cheapest: 2 h + 1 h + 0.5 h at 8 CNY/h and 500 g/kWh.
    assert (c["cost"], c["carbon_kg"]) == pytest.approx((28.0, 0.7))
    # The bound and the offline schedule: A and C on-prem, B in the cloud (B on-prem would push A
    # past its 30 min); the cheapest-offer baseline bursts C too (on-prem busy when it arrives).
    refs = (out["lower_bound_cost"], out["offline_cost"], out["cost_ratio"])
    assert refs == pytest.approx((15.5, 15.5, 1.0))
    assert s["cheapest-offer"]["cost"] == pytest.approx(18.0)
    # The table and the report's summary say the carbon the JSON does (it read 0 and 1 in whole kg).
    table = _szb(tmp_path, "--output", "table").stdout.replace("│", "┃")  # (rich: ┃ in the header)
    summary = (tmp_path / "rep" / "summary.md").read_text()
    for text, sep in ((table, "┃"), (summary, "|")):
        names = ("policy", "onprem-only", "cloud-cheapest")
        got = {name: table_row(text, sep, name)["carbon kg"] for name in names}
        assert got == {"policy": "0.3", "onprem-only": "0.1", "cloud-cheapest": "0.7"}, sep


def test_a_bound_no_schedule_meets_says_why_in_the_json(tmp_path: Path) -> None:
    """Two 3-GPU jobs at once on a 4-GPU node, no cloud offer that large, 10 min max_wait: one of
    them must start late, so the all-on-time bound is null, and the JSON said nothing of why."""
    from broker.sim.jobs import build_jobs
    from broker.sim.run import simulate
    from broker.sim.scenario import Scenario
    from broker.sim.traces import TraceJob
    from tests.sim.conftest import tiny_policy

    policy = tiny_policy(tmp_path, gpus=4)
    trace = [TraceJob(n, 0, 3600, count=3, accelerators=("A800",), tenant="t1", max_wait_s=600) for n in "ab"]
    scenario = Scenario(seed=1)
    for per_strategy in (False, True):
        jobs = build_jobs(trace, policy, scenario)
        out = simulate(policy, jobs, scenario, per_strategy_bounds=per_strategy).result
        assert out["lower_bound_cost"] is None and out["cost_ratio"] is None
        assert out["lower_bound_note"].startswith("none: no schedule starts every job within its max_wait")
        assert ("allows as many late jobs" in out["lower_bound_note"]) is per_strategy
        # Each strategy's own bound allows its late job, and stays under its cost.
        if per_strategy:
            assert out["strategies"]["policy"]["lower_bound_cost"] <= out["strategies"]["policy"]["cost"]


def test_jobs_the_bound_leaves_out_are_said_in_the_json(tmp_path: Path) -> None:
    """A gang of 2 x 3 GPUs fits the policy's two 4-GPU nodes, but not the one node `onprem_gpus: 4`
    keeps, and no cloud offer is that large: no option starts it, and the bound leaves it out,
    which the JSON did not say (its bound read as one of every job on time)."""
    from broker.policy import load_policy
    from broker.sim.jobs import build_jobs
    from broker.sim.run import simulate
    from broker.sim.scenario import Scenario
    from broker.sim.traces import TraceJob
    from tests.sim.conftest import tiny_policy

    tiny_policy(tmp_path, gpus=4)
    path = tmp_path / "policy.yaml"
    path.write_text(path.read_text().replace("count_per_node: 4, nodes: 1", "count_per_node: 4, nodes: 2"))
    policy = load_policy(path)
    trace = [
        TraceJob("gang", 0, 3600, count=3, nodes=2, accelerators=("A800",), tenant="t1"),
        TraceJob("one", 0, 3600, count=1, accelerators=("A800",), tenant="t1"),
    ]
    scenario = Scenario(seed=1, onprem_gpus=4)
    out = simulate(policy, build_jobs(trace, policy, scenario), scenario).result
    assert out["strategies"]["policy"]["never_started"] == 1
    assert out["lower_bound_cost"] == pytest.approx(2.0)  # the one job, 1 h x 1 GPU x 2 CNY
    assert out["lower_bound_note"] == (
        "1 job(s) no option can start (no partition holds them, no cloud runs them) left out of the bound: "
        "late in every strategy"
    )
