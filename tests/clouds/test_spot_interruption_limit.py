"""A job interrupted on spot again and again is not relaunched on spot for ever, each launch
billed: after `burst.spot_max_interruptions` it runs on-demand, or fails if it requires spot
(issue 6's spot recovery; szb serve, the ECS double in two regions, the real tea-openapi SDK)."""

from __future__ import annotations

import time

import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import job_pb2
from tests.brokerproc import BrokerProcess
from tests.clouds import on_moto
from tests.clouds.conftest import Regions, StartBroker
from tests.clouds.e2e_helpers import TERMINAL, md, wait_state
from tests.clouds.test_spot_alibaba import Stub, job_env, spot_job, submit, two_region_setup
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint

# (A reclaimed pool reopens after a second, as a real capacity TTL does after a while: the job
# could otherwise be kept off spot by the blocklist alone.)
POLICY = (
    on_moto.POLICY_HEAD
    + on_moto.cloud_site("ali-bj", "alibaba", "cn-beijing", "ali-bj.csv", currency="CNY", spot=True)
    + on_moto.cloud_site("ali-sh", "alibaba", "cn-shanghai", "ali-sh.csv", currency="CNY", spot=True)
    + """\
tenants:
  - {id: lab, kind: partner, entity_country: SG}
burst:
  sites:
    ali-bj: {spot_interruption_risk: 0.05, provisioning_p95: 60s}
    ali-sh: {spot_interruption_risk: 0.05, provisioning_p95: 60s}
  blocklist_ttl: {capacity: 1s}
  spot_max_interruptions: 2
  retries: {max_attempts: 6}
  heartbeat_timeout: 1h
"""
    + on_moto.CN_RESIDENCY
)


@pytest.fixture
def broker(ecs_server: EcsEndpoint, regions: Regions, start_broker: StartBroker) -> BrokerProcess:
    return start_broker(two_region_setup(POLICY, ecs_server, regions))


def _next_instance(
    stub: Stub, job_id: str, clouds: tuple[EcsCloud, ...], seen: set[str]
) -> tuple[EcsCloud, str] | None:
    """The job's next new instance in either region (None: the job ended first)."""
    deadline = time.monotonic() + 30
    while True:
        for cloud in clouds:
            for iid, inst in list(cloud.instances.items()):
                tags = {t["TagKey"]: t["TagValue"] for t in inst["Tags"]["Tag"]}
                if tags.get("szb:job") == job_id and iid not in seen:
                    seen.add(iid)
                    return cloud, iid
        if stub.GetJob(pb.GetJobRequest(id=job_id), metadata=md()).job.state in TERMINAL:
            return None
        assert time.monotonic() < deadline, f"{job_id}: no new instance"
        time.sleep(0.1)


def _interrupt_twice(stub: Stub, job_id: str, regions: Regions) -> set[str]:
    seen: set[str] = set()
    for n in (1, 2):
        found = _next_instance(stub, job_id, regions[:2], seen)
        assert found is not None, f"the job ended before interruption {n}"
        cloud, iid = found
        assert cloud.instances[iid]["SpotStrategy"] == "SpotAsPriceGo"
        assert job_env(cloud, iid)["SZB_ATTEMPT_NUMBER"] == str(n)
        time.sleep(1.5)  # the other pool's block is over: only this one's keeps the job off it
        cloud.release(iid)
    return seen


def test_a_job_that_requires_spot_fails_once_interrupted_the_policys_limit(
    broker: BrokerProcess, regions: Regions
) -> None:
    stub, job_id = submit(broker, spot_job("spot-only"))
    seen = _interrupt_twice(stub, job_id, regions)
    final = wait_state(stub, job_id, TERMINAL)
    assert final.state == job_pb2.JOB_STATE_FAILED, final.message
    assert "interrupted 2 times on spot" in final.message and "spot_max_interruptions" in final.message
    assert _next_instance(stub, job_id, regions[:2], seen) is None, "launched again after giving up"


def test_a_job_that_may_use_spot_runs_on_demand_once_interrupted_the_policys_limit(
    broker: BrokerProcess, regions: Regions
) -> None:
    stub, job_id = submit(broker, spot_job("either", spot=job_pb2.SPOT_MODE_ALLOWED))
    seen = _interrupt_twice(stub, job_id, regions)
    found = _next_instance(stub, job_id, regions[:2], seen)
    assert found is not None, "the job was not launched a third time"
    cloud, iid = found
    assert cloud.instances[iid]["SpotStrategy"] == "NoSpot", cloud.instances[iid]
    assert job_env(cloud, iid)["SZB_ATTEMPT_NUMBER"] == "3"
    stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=md())
