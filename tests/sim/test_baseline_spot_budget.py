"""The baselines check a burst against the budget as the policy reserves it: spot at its expected
billed hours (interruptions included), in whole cents.

Found by a held-out review: four 8-A800 one-hour jobs, a 100 CNY monthly budget, spot at 48
CNY an hour with 0.1 interruptions an hour. The policy reserves each spot run's expected bill
(50.4 CNY) and fits one in the month; the baselines checked the bill with no interruption (48)
and fit two, so the report had the policy dominated by every baseline.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.brokerproc import ROOT

POLICY = """\
version: 1
currency: CNY
objective: {price: 1.0, wait_hour_cost: 40}
accelerators: accelerators.yaml
regimes: regimes.yaml
sites:
  - id: home
    adapter: local
    country: CN
    residency: cn-mainland
    partitions:
      - {name: a800, accelerator: A800, count_per_node: 1, price_hour: 14.0}
  - id: aliyun-cn-beijing
    adapter: alibaba
    provider: aliyun-cn
    region: cn-beijing
    country: CN
    residency: cn-mainland
    catalog: {file: cloud.csv, region: cn-beijing, currency: CNY}
tenants:
  - {id: team-a, kind: university, entity_country: CN, monthly_budget: 100}
burst:
  wait_model: projected
  spot_max_expected_restarts: 3
  sites:
    aliyun-cn-beijing: {max_provisioning: 8, spot_interruption_risk: 0.1, provisioning_p95: 1m}
compliance:
  residency:
    zones: {cn-mainland: {countries: [CN]}}
"""
CATALOG = """\
InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,SpotPrice,Region,AvailabilityZone,Currency
ecs.gn7-a800x8,A800,8,128,1024,240.00,48.00,cn-beijing,cn-beijing-h,CNY
"""
TRACE = "name,submit_time,runtime,accelerator,count,tenant,max_wait\n" + "".join(
    f"b{i},{60 * i},1h,A800,8,team-a,10m\n" for i in range(4)
)


def test_baselines_fit_no_more_spot_bursts_in_a_budget_than_the_policy(tmp_path: Path) -> None:
    for name in ("accelerators.yaml", "regimes.yaml"):
        shutil.copy(ROOT / "configs" / name, tmp_path / name)
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "cloud.csv").write_text(CATALOG)
    (tmp_path / "jobs.csv").write_text(TRACE)
    out = subprocess.run(
        [sys.executable, "-m", "broker.cli", "simulate", "--trace", str(tmp_path / "jobs.csv"),
         "--policy", str(tmp_path / "policy.yaml"), "--baselines", "all", "--output", "json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    strategies = body["strategies"]
    slo = {name: s["slo_attainment"] for name, s in strategies.items()}
    cost = {name: s["cost"] for name, s in strategies.items()}
    policy = next(n for n in strategies if n not in ("onprem-only", "cloud-cheapest", "cheapest-offer"))
    for name in ("cloud-cheapest", "cheapest-offer"):
        assert slo[name] <= slo[policy] + 1e-9, (slo, cost)  # one spot burst in the month, as the policy
    assert body["frontier"]["dominated_by"] == [], body["frontier"]
