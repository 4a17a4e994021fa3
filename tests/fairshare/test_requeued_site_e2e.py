"""A requeued job lists no site until its next attempt is placed (szb serve, szb list).

A job preempted for fair-share reclaim went back to QUEUED with the site of the attempt it
lost: `szb list` showed it at `local` while it waited for a place, as if it still ran there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import JOB_PYTHON, BrokerProcess, running_broker, szb, write_broker_folder
from tests.local_policy import a800, local_policy

TOKENS = {"owner": "token-owner-0123456789", "borrower": "token-borrower-012345"}

POLICY = local_policy(
    "  - {id: owner, kind: institute, entity_country: CN, share: {quota: {local/a800: 1}}}\n"
    "  - {id: borrower, kind: sme, entity_country: CN}\n",
    a800(1),
    rest="fair_share:\n  reclaim: {grace: 1s, max_capacity_share: 0.5, window: 10m}\n",
)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with running_broker(write_broker_folder(tmp_path_factory.mktemp("requeued"), POLICY, TOKENS)) as proc:
        yield proc


def auth(tenant: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {TOKENS[tenant]}"),)


def job(name: str, seconds: int) -> job_pb2.JobSpec:
    msg = job_pb2.JobSpec(name=name, command=[JOB_PYTHON, "-c", f"import time; time.sleep({seconds})"],
                          runtime_estimate=duration_pb2.Duration(seconds=600))
    msg.resources.accelerators.count = 1
    msg.resources.accelerators.any_of.append("A800")
    return msg


def until(check: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_a_job_requeued_after_preemption_lists_no_site(broker: BrokerProcess) -> None:
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)

        def get(job_id: str, tenant: str) -> job_pb2.Job:
            return stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth(tenant)).job

        borrowed = stub.SubmitJob(
            pb.SubmitJobRequest(job=job("borrowed", 600)), metadata=auth("borrower")
        ).job.id
        until(lambda: get(borrowed, "borrower").state == job_pb2.JOB_STATE_RUNNING, "the borrowed job runs")
        assert get(borrowed, "borrower").site == "local"
        # The owner's job takes the one A800 back and keeps it while the test looks.
        mine = stub.SubmitJob(pb.SubmitJobRequest(job=job("mine", 600)), metadata=auth("owner")).job.id
        try:
            until(lambda: get(mine, "owner").state == job_pb2.JOB_STATE_RUNNING, "the owner's job runs")
            out = szb(broker, TOKENS["borrower"], "list", "-o", "json")
            assert out.returncode == 0, out.stderr
            listed = {j["id"]: j for j in json.loads(out.stdout)["jobs"]}
            seen = (listed[borrowed]["state"], listed[borrowed].get("site"))
            assert seen[0] == "QUEUED" and not seen[1], seen  # requeued: no site until placed again
            table = szb(broker, TOKENS["borrower"], "list", "--wide").stdout
            row = next(line for line in table.splitlines() if borrowed in line)
            assert "local" not in row, table
        finally:
            stub.CancelJob(pb.CancelJobRequest(id=borrowed), metadata=auth("borrower"))
            stub.CancelJob(pb.CancelJobRequest(id=mine), metadata=auth("owner"))
