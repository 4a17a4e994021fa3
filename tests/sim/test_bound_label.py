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
