"""Fixtures for the cloud adapter tests: moto behind the fault front, the local ECS endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from broker.model import AttemptId, JobId, JobSpec, LaunchRequest, Offer
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint
from tests.doubles.moto_front import MotoFront

ECS_KEYS = {"ak-test": "sk-test"}


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


@pytest.fixture(scope="session")
def ecs_server() -> Iterator[EcsEndpoint]:
    endpoint = EcsEndpoint.start(credentials=ECS_KEYS)
    yield endpoint
    endpoint.stop()


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
