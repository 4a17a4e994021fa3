"""`bench/decision_gap.py` splits the policy's cost over the offline schedule's job by job (issue
15: what is left of `slice-late`'s gap). On a hand-made world where the only difference is the
cloud offer a site preference makes the policy pick, the whole gap lands in `cloud offer choice`,
with the preference named. Asserts the split, not timings."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from broker.policy import load_policy
from broker.sim.jobs import build_jobs
from broker.sim.scenario import Delay, Scenario
from broker.sim.traces import TraceJob
from tests.sim.conftest import CATALOG, CONFIGS, POLICY, load_bench, run_bench

SECOND_SITE = """  - id: cloud2
    adapter: alibaba
    provider: aliyun-cn
    region: r2
    country: CN
    residency: cn-mainland
    catalog: {file: cloud.csv, region: r2, currency: CNY}
tenants:
"""


@pytest.mark.parametrize("preference", [5.0, 0.0])
def test_a_preferred_dearer_cloud_is_the_whole_gap_and_named(tmp_path: Path, preference: float) -> None:
    # The only GPU runs A for 2 h; B (1 h, max_wait 30 min) must burst. `cloud` sells the GPU at
    # 10 CNY/h, `cloud2` at 12. With +5 CNY/h of preference on `cloud` the policy's score picks
    # `cloud2`: 2 CNY over the offline schedule's pick, all of it offer choice, 5 CNY of
    # preference behind it. Without the preference both pick `cloud`: no gap.
    (tmp_path / "cloud.csv").write_text(CATALOG + "gpu.small,A800,1,8,64,12.0,,r2,r2-a,CNY\n")
    text = POLICY.format(configs=CONFIGS, gpus=1).replace("tenants:\n", SECOND_SITE)
    cloud = "    carbon_gco2_kwh: 500\n"
    text = text.replace(cloud, f"{cloud}    preference_per_hour: {preference}\n")
    knobs = "  hysteresis: 0s\n  wait_model: projected\n  late_wait_factor: 8\n"
    text = text.replace("  hysteresis: 0s\n", knobs)
    (tmp_path / "policy.yaml").write_text(text)
    policy = load_policy(tmp_path / "policy.yaml")
    scenario = Scenario(seed=1, provisioning=Delay(min_s=60, mode_s=60, max_s=60))
    trace = [
        TraceJob(n, at, run, count=1, accelerators=("A800",), tenant="t1")
        for n, at, run in (("a", 0.0, 7200.0), ("b", 60.0, 3600.0))
    ]
    module = load_bench("decision_gap")
    try:
        got = module.gap(policy, build_jobs(trace, policy, scenario), scenario)
    finally:
        sys.modules.pop("decision_quality", None)
    assert got["offline_cost"] == pytest.approx(2.0 * 2 + 10.0)  # A at home, B on `cloud`
    buckets = got["buckets"]
    assert sum(buckets.values()) == pytest.approx(got["gap"], abs=0.02)
    assert buckets["partition choice"] == buckets["which jobs burst"] == 0.0
    if preference:
        assert got["gap"] == pytest.approx(2.0) and buckets["cloud offer choice"] == pytest.approx(2.0)
        [row] = got["cloud_offer_choice"]
        where = (row["tenant"], row["policy_site"], row["cheapest_site"], row["jobs"])
        assert where == ("t1", "cloud2", "cloud", 1)
        assert row["preference"] == pytest.approx(5.0)  # 5 CNY/h x 1 h for `cloud` over `cloud2`
    else:
        assert got["gap"] == pytest.approx(0.0) and got["cloud_offer_choice"] == []


def test_the_gap_runs_on_a_held_out_trace(tmp_path: Path) -> None:
    """As `bench/decision_quality.py --trace`: the held-out checker splits the same runs' gap."""
    trace = tmp_path / "held-out.csv"
    trace.write_text(
        "submit_time,runtime,accelerator,count,tenant,max_wait\n"
        + "".join(f"{60 * i},2h,A800,8,pku-nlp,10m\n" for i in range(40))
    )
    out = run_bench("decision_gap", "--json", "--only", "slice-late", "--trace", str(trace))
    assert out.returncode == 0, out.stderr
    (result,) = json.loads(out.stdout)
    assert (result["scenario"], result["trace"], result["jobs"]) == ("slice-late", str(trace), 20)
    assert sum(result["buckets"].values()) == pytest.approx(result["gap"], abs=0.05)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--only", "alibaba-peek"], "invalid choice: 'alibaba-peek'"),
        (["--only", "synthetic-llm"], "invalid choice: 'synthetic-llm'"),  # (no offline schedule to split)
        (["--only", "slice-late", "--policy", "nowhere.yaml"], "nowhere.yaml"),
        (["--only", "slice-late", "--burst", "wait_model=bogus"], "burst.wait_model: "),
        (["--only", "slice-late", "--trace", "nowhere.csv"], "nowhere.csv"),
    ],
)
def test_a_bad_flag_is_one_clear_line(args: list[str], said: str) -> None:
    out = run_bench("decision_gap", *args)
    assert out.returncode == 2 and out.stdout == ""
    assert "Traceback" not in out.stderr and said in out.stderr, out.stderr


def test_a_gap_bought_by_lateness_says_so(tmp_path: Path) -> None:
    """A policy that leaves jobs late can cost less than the offline schedule, which starts them
    on time: the split read "policy 1,200 - offline 1,904 = -704" as if it beat the reference."""
    from tests.sim.conftest import tiny_policy

    tiny_policy(tmp_path, gpus=8)
    trace = tmp_path / "trace.csv"  # 300 1-GPU jobs at once on 256 GPUs: 44 must burst to be on time
    trace.write_text("submit_time,runtime,accelerator,count,tenant,max_wait\n" + "0,2h,A800,1,t1,30m\n" * 300)
    policy, knobs = str(tmp_path / "policy.yaml"), ("wait_model=fluid", "wait_estimate_factor=0.01")
    args = ("--only", "alibaba-peak", "--policy", policy, "--trace", str(trace), "--burst", *knobs)
    out = run_bench("decision_gap", "--json", *args)
    assert out.returncode == 0, out.stderr
    (result,) = json.loads(out.stdout)
    assert result["gap"] < 0 and result["late_jobs"] == {"policy": 44, "offline": 0}, result
    text = run_bench("decision_gap", *args)
    assert "policy 1,200.00 (44 late) - offline 1,904.00 (0 late)" in text.stdout, text.stdout
