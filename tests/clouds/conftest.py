"""Fixtures for the cloud adapter tests: moto behind the fault front, the local ECS endpoint."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from broker.model import AttemptId, JobId, JobSpec, LaunchRequest, Offer
from tests.brokerproc import BrokerProcess
from tests.clouds.on_moto import A10, ECS_KEYS, BrokerSetup
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint
from tests.doubles.moto_front import MotoFront

__all__ = ["ECS_KEYS", "Regions", "StartBroker"]

StartBroker = Callable[..., BrokerProcess]
Regions = tuple[EcsCloud, EcsCloud, EcsEndpoint]


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoFront]:
    front = MotoFront.start()
    yield front
    front.stop()


@pytest.fixture
def moto(moto_server: MotoFront) -> Iterator[MotoFront]:
    """The session's moto front with fresh state and an empty fault scenario."""
    moto_server.reset()
    yield moto_server
    moto_server.reset()


@pytest.fixture
def start_broker(tmp_path: Path) -> Iterator[StartBroker]:
    """`start_broker(setup, extra_env=..., timeout=...)`: `szb serve` on `setup` written into the
    test's folder; every broker started is stopped after the test."""
    started: list[BrokerProcess] = []

    def start(
        setup: BrokerSetup, *, extra_env: dict[str, str] | None = None, timeout: float = 120.0
    ) -> BrokerProcess:
        proc = BrokerProcess(setup.write(tmp_path), extra_env=extra_env)
        started.append(proc)
        proc.start(timeout=timeout)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="session")
def ecs_server() -> Iterator[EcsEndpoint]:
    endpoint = EcsEndpoint.start(credentials=ECS_KEYS)
    yield endpoint
    endpoint.stop()


@pytest.fixture
def regions(ecs_server: EcsEndpoint) -> Iterator[Regions]:
    """Two ECS regions with A10s: Beijing behind the session's endpoint, Shanghai behind its own."""
    bj = EcsCloud(instance_types=(A10,), zones=("cn-beijing-i",))
    sh = EcsCloud(instance_types=(A10,), zones=("cn-shanghai-b",))
    ecs_server.handler = bj
    second = EcsEndpoint.start(credentials=ECS_KEYS)
    second.handler = sh
    yield bj, sh, second
    second.stop()
    ecs_server.handler = EcsCloud()


@pytest.fixture
def ecs(ecs_server: EcsEndpoint) -> Iterator[EcsCloud]:
    """A fresh fake ECS region behind the session's endpoint; add faults to `.faults`."""
    cloud = EcsCloud()
    ecs_server.handler = cloud
    ecs_server.requests.clear()
    yield cloud
    ecs_server.handler = EcsCloud()


def launch(offer: Offer, token: str, *, job: str = "job-1", attempt: str = "att-1") -> LaunchRequest:
    spec = JobSpec(
        name="train",
        command=("python3", "train.py", "--epochs", "3"),
        env={"SEED": "7"},
        runtime_estimate=timedelta(hours=1),
    )
    return LaunchRequest(
        job_id=JobId(job),
        attempt_id=AttemptId(attempt),
        token=token,
        spec=spec,
        offer=offer,
        agent_endpoint="127.0.0.1:7070",
        agent_token="agent-secret",
    )
