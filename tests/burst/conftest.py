"""A small policy with an on-prem partition and two clouds, for the pure burst decision."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.policy import Policy, load_policy
from tests.brokerproc import copy_hardware_files

HEADER = (
    "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,SpotPrice,Region,AvailabilityZone"
)

POLICY = """\
version: 1
currency: CNY
fx: {USD: 7.0}
objective: {price: 1.0, wait_hour_cost: 40}
accelerators: accelerators.yaml
regimes: regimes.yaml
sites:
  - id: onprem
    adapter: local
    country: CN
    residency: cn-mainland
    partitions:
      - {name: a800, accelerator: A800, count_per_node: 8, price_hour: 14.0}
  - id: ali-bj
    adapter: alibaba
    region: cn-beijing
    country: CN
    residency: cn-mainland
    catalog: {file: ali.csv, region: cn-beijing, currency: CNY, spot: true}
  - id: aws-east
    adapter: aws
    region: us-east-1
    country: US
    residency: global
    catalog: {file: aws.csv, region: us-east-1, currency: USD, spot: false}
tenants:
  - {id: lab, kind: partner, entity_country: SG}
  - {id: poor, kind: sme, entity_country: SG, monthly_budget: 20}
  - id: vouchered
    kind: sme
    entity_country: SG
    monthly_budget: 5
    vouchers: [{id: v1, balance: 100, discount: 0.5, sites: [ali-bj]}]
burst:
  hysteresis: 10m
  sites:
    ali-bj: {max_provisioning: 2, spot_interruption_risk: 0.1}
  failure_throttle: {window: 10m, min_attempts: 3, max_failure_rate: 0.5, cooldown: 15m}
compliance:
  residency:
    zones: {cn-mainland: {countries: [CN]}}
"""


def write_policy(folder: Path, text: str = POLICY) -> Path:
    copy_hardware_files(folder)
    (folder / "ali.csv").write_text(
        f"{HEADER}\necs.gn7i-c8g1.2xlarge,A10,1,8,30,13.90,4.00,cn-beijing,cn-beijing-i\n"
    )
    (folder / "aws.csv").write_text(f"{HEADER}\np4d.24xlarge,A100,8,96,1152,32.77,,us-east-1,us-east-1a\n")
    path = folder / "policy.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    return load_policy(write_policy(tmp_path_factory.mktemp("burst-policy")))
