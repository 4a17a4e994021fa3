"""The money tests' one cloud offer: an A10 on the ECS double in cn-beijing-i, priced in CNY."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google.protobuf import duration_pb2

from broker.api import job_pb2
from tests.clouds import on_moto
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint

A10 = "ecs.gn7i-c8g1.2xlarge"
ZONE = "cn-beijing-i"


def a10_catalog(price: float) -> dict[str, str]:
    """The `catalogs` of a BrokerSetup whose `ali.csv` sells the A10 at `price` CNY an hour."""
    return {"ali.csv": on_moto.catalog(f"{A10},A10,1,8,30,{price},,cn-beijing,{ZONE},CNY", currency=True)}


def a10_job(name: str, runtime_s: int) -> job_pb2.JobSpec:
    """A one-A10 job estimated at `runtime_s` that may not wait: it bursts at once."""
    return job_pb2.JobSpec(
        name=name,
        command=["python3", "train.py"],
        runtime_estimate=duration_pb2.Duration(seconds=runtime_s),
        max_wait=duration_pb2.Duration(seconds=0),
        resources=job_pb2.Resources(accelerators=job_pb2.AcceleratorRequest(count=1, any_of=["A10"])),
    )


def a10_region(ecs_server: EcsEndpoint, zone: str = ZONE) -> Iterator[EcsCloud]:
    """An ECS double selling the A10 in `zone` only, behind `ecs_server` until the generator ends."""
    cloud = EcsCloud(instance_types=(A10,), zones=(zone,))
    ecs_server.handler = cloud
    yield cloud
    ecs_server.handler = EcsCloud()


@pytest.fixture
def ecs(ecs_server: EcsEndpoint) -> Iterator[EcsCloud]:
    """The A10 region for one test; a test module that imports it has it in place of conftest's `ecs`."""
    yield from a10_region(ecs_server)
