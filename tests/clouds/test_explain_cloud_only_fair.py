"""Live explain under a policy with no on-prem site says no on-prem share applies, not "borrowed".

Review: a cloud-only policy's gang was explained "1st in tenant order (borrowed); tenant lab at
0.0× its share": fair share orders on-prem work, and there was no on-prem share to borrow past.
Through a real `szb serve` with an AWS site on moto, over the CLI (`szb explain --server`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.brokerproc import JOB_PYTHON, BrokerProcess, szb
from tests.clouds import on_moto
from tests.clouds.conftest import StartBroker
from tests.doubles.moto_front import MotoFront

TOKEN = "token-lab-0123456789abcdef"
POLICY = (
    on_moto.POLICY_HEAD
    + on_moto.cloud_site("aws-east", "aws", "us-east-1", "aws-east.csv")
    + "tenants:\n  - {id: lab, kind: partner, entity_country: SG, monthly_budget: 5000}\n"
    + on_moto.CN_RESIDENCY
)


@pytest.fixture
def broker(moto: MotoFront, start_broker: StartBroker) -> BrokerProcess:
    return start_broker(
        on_moto.BrokerSetup(
            POLICY,
            tokens={"lab": TOKEN},
            sites={"aws-east": on_moto.aws_on_moto(moto.url)},
            catalogs={"aws-east.csv": on_moto.catalog("g5.xlarge,A10G,1,4,16,1.006,,us-east-1,us-east-1a")},
        )
    )


@pytest.mark.parametrize("nodes", [2, 1])
def test_a_cloud_only_policy_claims_no_borrowing(
    broker: BrokerProcess, tmp_path: Path, nodes: int
) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(
        f"name: ddp\ncommand: [{JOB_PYTHON}, -c, 'print(1)']\nruntime_estimate: 1h\n"
        f"resources:\n  nodes: {nodes}\n  accelerators: {{count: 1, any_of: [A10G]}}\n"
    )
    body = json.loads(szb(broker, TOKEN, "explain", str(job), "-o", "json").stdout)
    decision = body["decision"]
    assert decision["action"] == "run" and decision["burst"], decision
    said = " ".join(decision["reasons"])
    assert "borrowed" not in said and "within its quota" not in said, decision["reasons"]
    assert "no on-prem partition can run it, so no on-prem share applies" in said, decision["reasons"]
