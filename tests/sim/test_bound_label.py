"""The table's headline bound says it assumes every job on time, and when the policy started
jobs late (and so may cost less than it) says how many."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from broker.cli import main

ROOT = Path(__file__).resolve().parents[2]
TRACE = ROOT / "configs" / "traces" / "alibaba-gpu-v2023-openb-pods.csv.gz"

POLICY = """\
version: 1
currency: CNY
fx: {{USD: 7.2}}
objective: {{wait_hour_cost: {wait}}}
sites:
  - id: campus
    adapter: slurm
    country: CN
    residency: cn-mainland
    partitions:
      - {{name: gpu, accelerator: A800, count_per_node: 8, nodes: 4, price_hour: 2}}
  - id: ali-bj
    adapter: alibaba
    country: CN
    residency: cn-mainland
    catalog: {{file: {catalog}, region: cn-beijing, currency: CNY}}
tenants:
  - {{id: lab, kind: university, entity_country: CN}}
compliance:
  residency:
    zones: {{cn-mainland: {{countries: [CN]}}}}
"""


def simulate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], wait: int, *out: str, jobs: int = 300
) -> str:
    path = tmp_path / f"policy-{wait}.yaml"
    path.write_text(POLICY.format(wait=wait, catalog=ROOT / "configs/catalog/alibaba_gpu_ecs.csv"))
    argv = ["simulate", "--trace", str(TRACE), "--policy", str(path), "--jobs", str(jobs), *out]
    assert main(argv) == 0
    return str(capsys.readouterr().out)


def test_late_starts_the_bound_does_not_allow_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The first 300 jobs on 32 GPUs: a few start late (waiting priced at nothing, they need not burst).
    late = json.loads(simulate(tmp_path, capsys, 0, "-o", "json"))["strategies"]["policy"]["late_jobs"]
    assert late > 0
    table = simulate(tmp_path, capsys, 0)
    footer = re.search(r"lower bound [\d,.]+ CNY \((.*?)\); cost ratio", table)
    assert footer is not None, table
    assert footer.group(1) == (
        f"every job on time; the policy started {late} late: --per-strategy-bounds gives its own bound"
    )


def test_a_policy_with_no_late_start_reads_every_job_on_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = json.loads(simulate(tmp_path, capsys, 40, "-o", "json", jobs=100))
    assert result["strategies"]["policy"]["late_jobs"] == 0
    table = simulate(tmp_path, capsys, 40, jobs=100)
    label = re.search(r"lower bound [\d,.]+ CNY \((.*?)\); cost ratio", table)
    assert label is not None, table
    assert label.group(1) == "every job on time"


def test_a_bound_no_schedule_can_meet_says_so_and_the_flag_it_names_gives_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Two 4-GPU jobs at once on one 4-GPU on-prem node, neither allowed to wait, and no cloud
    # instance with 4 GPUs: one of them starts late in any schedule, so there is no all-on-time
    # bound. The footer printed "lower bound - CNY (every job on time; ... --per-strategy-bounds
    # gives its own bound)", that advice even when the flag was given and its bound solved (the
    # late job runs late on-prem in that bound: two jobs on-prem, 16 CNY, the policy's own cost).
    from tests.sim.conftest import tiny_policy

    tiny_policy(tmp_path, gpus=4)  # (written to tmp_path/policy.yaml)
    trace = tmp_path / "trace.csv"
    trace.write_text(
        "submit_time,runtime,accelerator,count,tenant,max_wait\n0,1h,A800,4,t1,0\n0,1h,A800,4,t1,0\n"
    )
    argv = [
        "simulate",
        "--trace",
        str(trace),
        "--policy",
        str(tmp_path / "policy.yaml"),
        "--baselines",
        "onprem-only",
    ]
    assert main(argv) == 0
    plain = capsys.readouterr().out
    assert (
        "lower bound - CNY (none: no schedule starts every job on time; the policy started 1 late: " in plain
    )
    assert "--per-strategy-bounds gives its own bound" in plain
    assert main([*argv, "--no-lower-bound"]) == 0
    assert "lower bound - CNY (not computed); cost ratio -" in capsys.readouterr().out
    assert main([*argv, "--per-strategy-bounds", "-o", "json"]) == 0
    own = json.loads(capsys.readouterr().out)["strategies"]["policy"]
    assert own["late_jobs_allowed_in_bound"] == 1 and own["lower_bound_cost"] == pytest.approx(16.0)
    assert main([*argv, "--per-strategy-bounds"]) == 0
    table = capsys.readouterr().out
    assert "--per-strategy-bounds gives" not in table
    assert "the policy started 1 late: its own bound with 1 late 16.00 CNY, cost ratio 1.00" in table
