"""A quota refusal blocks what that quota counts, not the whole region for every tenant.

EC2 keeps one vCPU quota per family bucket and market in a region ("Running On-Demand P
instances", "... G and VT instances"; spot apart): a `VcpuLimitExceeded` for a p4d.24xlarge says
nothing of g5.xlarge launches there. Blocking the region for the quota TTL kept every tenant's
G-family jobs off it. Through a real `szb serve` on moto (faults as EC2 sends them) and the ECS
double.
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
from tests.clouds.test_spot_quota import POLICY
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint
from tests.doubles.moto_front import AwsFault, MotoFront
from tests.job_events import reached

__all__ = ["ecs"]  # conftest's blank ECS region gives way to the A10 one

QUOTA = "VcpuLimitExceeded"
P_QUOTA = "You have requested more vCPU capacity than your current vCPU limit of 64 allows for the " \
          "instance bucket that the specified instance type belongs to."


def start(moto: MotoFront, ecs_server: EcsEndpoint, start_broker: StartBroker) -> BrokerProcess:
    return start_broker(
        on_moto.BrokerSetup(
            POLICY,
            tokens={"sg-lab": TOKEN},
            sites=on_moto.east_and_beijing(moto.url, ecs_server.address, heartbeat_s=1),
            catalogs={
                "aws-east.csv": on_moto.catalog(
                    "g5.xlarge,A10G,1,4,16,1.006,,us-east-1,us-east-1a",
                    "p4d.24xlarge,A100,8,96,1152,32.77,,us-east-1,us-east-1a",
                ),
                "ali.csv": on_moto.catalog(f"{on_moto.A10},A10,1,8,30,13.90,,cn-beijing,cn-beijing-i,CNY",
                                           currency=True),
            },
        )
    )


def big_job(folder: Path) -> Path:
    """Eight A100s: only aws-east's p4d.24xlarge fits."""
    path = job_yaml(folder, "big", max_wait="0s", estimate="2h", accelerators="A100")
    path.write_text(path.read_text().replace("count: 1", "count: 8"))
    return path


def test_a_p_family_vcpu_quota_leaves_g_family_launches_in_the_region_open(
    moto: MotoFront, ecs: EcsCloud, ecs_server: EcsEndpoint, start_broker: StartBroker, tmp_path: Path
) -> None:
    broker = start(moto, ecs_server, start_broker)
    moto.scenario.faults.append(AwsFault("RunInstances", "VcpuLimitExceeded", 400, P_QUOTA,
                                         region="us-east-1", instance_type="p4d.24xlarge"))
    big = big_job(tmp_path)
    big_id = submit_file(broker, TOKEN, big)
    with stub_for(broker.address) as stub:
        refused = events_so_far(stub, big_id, until=lambda evs: any(QUOTA in e.message for e in evs))
        history = [e.message for e in refused]
        assert any(QUOTA in m for m in history), history
        # A G-family job (one A10G, cheapest on aws-east) still goes to us-east-1.
        small_id = submit_file(broker, TOKEN, job_yaml(tmp_path, "a10", max_wait="0s", estimate="2h",
                                                        accelerators="A10G, A10"))
        running = wait_state(stub, small_id, {job_pb2.JOB_STATE_RUNNING}, token=TOKEN)
        small = [e.message for e in events_so_far(stub, small_id, until=reached(job_pb2.JOB_STATE_RUNNING))]
    assert running.site == "aws-east", small
    assert not ecs.instances

    # explain: the P family's on-demand offer is blocked, and says which quota; the G offer is not
    out = szb(broker, TOKEN, "explain", str(big), "-o", "json")  # (exit 1: nowhere to place it now)
    assert out.returncode == 1, out.stderr
    offers = [o for o in json.loads(out.stdout)["offers"] if o["site"] == "aws-east"]
    (p4d,) = [o for o in offers if not o["spot"] and o["instance_type"] == "p4d.24xlarge"]
    assert not p4d["allowed"]
    (reason,) = p4d["reasons"]
    assert reason["rule"] == "failover.blocked", reason
    assert QUOTA in reason["message"] and "on-demand quota of families/types p in" in reason["message"]
