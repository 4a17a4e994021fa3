"""A gang refused at a later node for quota blocks gangs that big there, not one-node jobs.

EC2 refusing a 2-node gang's second node with `VcpuLimitExceeded` shows the account's quota had
room for the first: blocking the region kept every one-node job off it for the quota TTL.
Through a real `szb serve` on moto and the ECS double (`test_gang_e2e`'s world).
"""

from __future__ import annotations

import time

from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import job_pb2
from tests.clouds.e2e_helpers import md
from tests.clouds.test_gang_e2e import World, attempts_of, gang, gang_of, submit, world
from tests.doubles.moto_front import AwsFault

__all__ = ["world"]

QUOTA = "You have requested more vCPU capacity than your current vCPU limit of 4 allows"


def test_a_gang_refused_at_its_second_node_leaves_one_node_jobs_in_the_region(world: World) -> None:
    world.moto.scenario.faults = [
        AwsFault("RunInstances", "VcpuLimitExceeded", 400, QUOTA, region="us-east-1", after=1, times=1)
    ]
    stub, gang_id = submit(world, gang("ddp", "A10G", nodes=2))
    gang_of(world, gang_id, "aws-west")  # the east refused its 2nd node: the gang went west
    single = job_pb2.JobSpec(
        name="one", command=["python", "-c", "1"], runtime_estimate=duration_pb2.Duration(seconds=3600),
        resources=job_pb2.Resources(accelerators=job_pb2.AcceleratorRequest(count=1, any_of=["A10G"])),
    )
    explained = stub.ExplainPlacement(pb.ExplainPlacementRequest(job=single), metadata=md()).explanation
    assert explained.chosen.site == "aws-east", explained
    # Another 2-node gang is kept off us-east-1, and explain says which quota.
    again = stub.ExplainPlacement(pb.ExplainPlacementRequest(job=gang("ddp2", "A10G")), metadata=md())
    assert again.explanation.chosen.site != "aws-east"
    assert "for jobs of 2 or more nodes" in str(again.explanation), again.explanation
    one_id = stub.SubmitJob(pb.SubmitJobRequest(job=single), metadata=md()).job.id
    deadline = time.monotonic() + 30
    while not attempts_of(world, one_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [a.site for a in attempts_of(world, one_id)][:1] == ["aws-east"]
