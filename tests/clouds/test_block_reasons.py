"""`szb explain` says why an offer or region is blocked: the cloud's own answer, not a guess.

An ECS zone that answers `Zone.NotOnSale` is dropped for good (never sold there), and an AWS
region that answered a vCPU quota error is blocked (that quota's family bucket) for the quota
TTL; explain read "blocked after a capacity error" for the first and listed four possible
causes for the second. Through a real `szb serve` on the ECS double and moto.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.api import job_pb2
from tests.brokerproc import stub_for, szb
from tests.clouds import on_moto
from tests.clouds.conftest import StartBroker
from tests.clouds.e2e_helpers import TOKEN, job_yaml, submit_file, wait_state
from tests.clouds.ecs_a10 import a10_region
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint
from tests.doubles.moto_front import AwsFault, MotoFront

OPERATOR = "op-token-0123456789abcdef"

POLICY = (
    on_moto.POLICY_HEAD
    + on_moto.ONPREM_A800
    + on_moto.cloud_site("aws-east", "aws", "us-east-1", "aws-east.csv")
    + on_moto.cloud_site("aliyun-bj", "alibaba", "cn-beijing", "ali.csv", currency="CNY")
    + on_moto.sg_lab_tail()
)


@pytest.fixture
def ecs(ecs_server: EcsEndpoint) -> Iterator[EcsCloud]:
    yield from a10_region(ecs_server, "cn-beijing-h")  # zone i is not sold


def test_explain_names_the_error_behind_each_block(
    moto: MotoFront, ecs: EcsCloud, ecs_server: EcsEndpoint, start_broker: StartBroker, tmp_path: Path
) -> None:
    broker = start_broker(
        on_moto.BrokerSetup(
            POLICY,
            tokens={"sg-lab": TOKEN},
            operators={"sg-lab": OPERATOR},
            sites=on_moto.east_and_beijing(moto.url, ecs_server.address, heartbeat_s=1),
            catalogs={
                "aws-east.csv": on_moto.catalog("g5.xlarge,A10G,1,4,16,1.006,,us-east-1,us-east-1a"),
                "ali.csv": on_moto.catalog(
                    f"{on_moto.A10},A10,1,8,30,9.00,,cn-beijing,cn-beijing-i,CNY",
                    f"{on_moto.A10},A10,1,8,30,9.50,,cn-beijing,cn-beijing-h,CNY",
                    currency=True,
                ),
            },
        )
    )
    quota = "You have requested more vCPU capacity than your current vCPU limit"
    moto.scenario.faults.append(AwsFault("RunInstances", "VcpuLimitExceeded", 400, quota))
    job = job_yaml(tmp_path, "a10", max_wait="0s", estimate="2h", accelerators="A10G, A10")
    job_id = submit_file(broker, TOKEN, job)
    with stub_for(broker.address) as stub:
        running = wait_state(stub, job_id, {job_pb2.JOB_STATE_RUNNING})
    assert (running.site, running.attempts) == ("aliyun-bj", 3)  # aws quota, zone i not on sale, zone h

    out = szb(broker, TOKEN, "explain", str(job), "-o", "json")
    assert out.returncode == 0, out.stderr
    why = {(o["site"], o["zone"]): " ".join(r["message"] for r in o["reasons"])
           for o in json.loads(out.stdout)["offers"]}
    assert "Zone.NotOnSale" in why[("aliyun-bj", "cn-beijing-i")], why
    assert "VcpuLimitExceeded" in why[("aws-east", "us-east-1a")], why
    assert why[("aliyun-bj", "cn-beijing-h")] == "", why
    # An operator's `szb status` shows the blocks too (a region out for its quota was invisible
    # there), and a tenant's does not (the provider's text is the operator's business).
    shown = szb(broker, OPERATOR, "status").stdout
    # (EC2 counts the quota per family bucket and market: the G bucket on demand is blocked)
    blocked = "blocked aws-east/us-east-1/quota:ondemand:g,vt:1: QuotaError: VcpuLimitExceeded (for 30 min"
    assert blocked in shown, shown
    assert "Zone.NotOnSale" in shown, shown
    assert "blocked" not in szb(broker, TOKEN, "status").stdout
