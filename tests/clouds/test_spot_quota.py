"""A spot quota error closes the region's spot market only: on demand there is still tried.

EC2 answers `MaxSpotInstanceCountExceeded` when the account's spot limit in the region is
used up (export-controls-and-catalog.md §5.1: "failover to on-demand / other region"). The
region's on-demand capacity is a different limit, so the job's next offer may be on demand in
the same region; blocking the whole region sent it to a dearer cloud for the quota TTL.
Through a real `szb serve` on moto (faults as EC2 sends them) and the ECS double.
"""

from __future__ import annotations

import json
from pathlib import Path

from broker.api import job_pb2
from tests.brokerproc import BrokerProcess, stub_for, szb
from tests.clouds import on_moto
from tests.clouds.conftest import StartBroker
from tests.clouds.e2e_helpers import TOKEN, job_yaml, submit_file, wait_state
from tests.clouds.ecs_a10 import ecs
from tests.clouds.test_breaker_trial import events_so_far
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint
from tests.doubles.moto_front import AwsFault, MotoFront
from tests.job_events import reached

__all__ = ["ecs"]  # conftest's blank ECS region gives way to the A10 one

POLICY = (
    on_moto.POLICY_HEAD
    + on_moto.ONPREM_A800
    + on_moto.cloud_site("aws-east", "aws", "us-east-1", "aws-east.csv", spot=True)
    + on_moto.cloud_site("aliyun-bj", "alibaba", "cn-beijing", "ali.csv", currency="CNY")
    + on_moto.sg_lab_tail()
)


def start(moto: MotoFront, ecs_server: EcsEndpoint, start_broker: StartBroker) -> BrokerProcess:
    return start_broker(
        on_moto.BrokerSetup(
            POLICY,
            tokens={"sg-lab": TOKEN},
            sites=on_moto.east_and_beijing(moto.url, ecs_server.address, heartbeat_s=1),
            catalogs={
                # spot 3.24 CNY/h < on demand 7.24 < Alibaba's 13.90
                "aws-east.csv": on_moto.catalog("g5.xlarge,A10G,1,4,16,1.006,0.45,us-east-1,us-east-1a"),
                "ali.csv": on_moto.catalog(f"{on_moto.A10},A10,1,8,30,13.90,,cn-beijing,cn-beijing-i,CNY",
                                           currency=True),
            },
        )
    )


def test_a_spot_quota_error_moves_the_job_to_on_demand_in_the_same_region(
    moto: MotoFront, ecs: EcsCloud, ecs_server: EcsEndpoint, start_broker: StartBroker, tmp_path: Path
) -> None:
    broker = start(moto, ecs_server, start_broker)
    moto.scenario.faults.append(
        AwsFault("RunInstances", "MaxSpotInstanceCountExceeded", 400,
                 "Max spot instance count exceeded", region="us-east-1", times=1)
    )
    job = job_yaml(tmp_path, "a10", max_wait="0s", estimate="2h", accelerators="A10G, A10")
    job_id = submit_file(broker, TOKEN, job)
    with stub_for(broker.address) as stub:
        running = wait_state(stub, job_id, {job_pb2.JOB_STATE_RUNNING}, token=TOKEN)
        history = [e.message for e in events_so_far(stub, job_id, until=reached(job_pb2.JOB_STATE_RUNNING))]
    assert running.site == "aws-east", history
    launches = [p for a, _r, p in moto.scenario.calls if a == "RunInstances"]
    assert [p.get("InstanceMarketOptions.MarketType") for p in launches] == ["spot", None]
    assert not ecs.instances
    failed = next(m for m in history if "MaxSpotInstanceCountExceeded" in m)
    assert "spot" in failed.split("next:")[1], failed

    # explain: the region's spot offer is blocked, and says why; on demand there is allowed
    out = szb(broker, TOKEN, "explain", str(job), "-o", "json")
    assert out.returncode == 0, out.stderr
    aws = {o["spot"]: o for o in json.loads(out.stdout)["offers"] if o["site"] == "aws-east"}
    assert aws[False]["allowed"], aws[False]
    assert not aws[True]["allowed"]
    (reason,) = aws[True]["reasons"]
    assert reason["rule"] == "failover.blocked" and "spot quota" in reason["message"], reason
