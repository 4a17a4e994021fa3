"""Live explain and the dispatcher agree when route limits and money decide, within one pass too.

The site of tests/clouds/test_explain_live.py (one local A800, AWS on moto) with a route limit
of one instance at AWS. A holder takes the A800; then a batch of impatient jobs arrives at
once (one SubmitJobs, decided in one dispatch pass): only one may burst, because the route
is full (and, for a tenant whose budget pays one burst, because the money is spent). Explain
for the next such job says the same as the dispatcher does for it.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import BrokerProcess, szb
from tests.clouds.conftest import StartBroker
from tests.clouds.e2e_helpers import job_yaml, md, wait_state
from tests.clouds.on_moto import BrokerSetup
from tests.clouds.test_explain_live import POOR, RICH, events_so_far, setup
from tests.doubles.moto_front import MotoFront

ROUTE_FULL = "aws-east is at its limit of 1 instance(s)"


def limited(moto: MotoFront, *, max_instances: int, rich_budget: int) -> BrokerSetup:
    """test_explain_live's site with a route limit at AWS and rich-lab's budget."""
    base = setup(moto.url)
    policy = base.policy.replace("monthly_budget: 5000", f"monthly_budget: {rich_budget}")
    limit = f"burst:\n  sites:\n    aws-east: {{max_instances: {max_instances}}}\n"
    return replace(base, policy=policy + limit)


@pytest.fixture
def route_limited(moto: MotoFront, start_broker: StartBroker) -> BrokerProcess:
    return start_broker(limited(moto, max_instances=1, rich_budget=5000))


@pytest.fixture
def budget_limited(moto: MotoFront, start_broker: StartBroker) -> BrokerProcess:
    # 10 h x 1.006 USD x 7.2 = 72.4 CNY: a budget of 100 pays for exactly one burst.
    return start_broker(limited(moto, max_instances=5, rich_budget=100))


def waiting_reason(stub: broker_service_pb2_grpc.BrokerServiceStub, job_id: str, token: str) -> str:
    """The dispatcher's last waiting reason for a job (it fails the test if the job was placed)."""
    deadline = time.monotonic() + 120  # a dispatcher pass; more than 20 s on a loaded box
    while True:
        events = events_so_far(stub, job_id, token)
        assert not [e for e in events if e.kind == "placed"], [e.message for e in events]
        waits = [e.message for e in events if e.kind == "waiting"]
        if waits:
            return waits[-1]
        assert time.monotonic() < deadline, [e.message for e in events]
        time.sleep(0.2)


def submit(broker: BrokerProcess, token: str, *files: Path) -> list[str]:
    out = szb(broker, token, "submit", *map(str, files), "-o", "json")
    assert out.returncode == 0, out.stderr
    return [j["id"] for j in json.loads(out.stdout)]


def placed_at(stub: broker_service_pb2_grpc.BrokerServiceStub, job_id: str, token: str) -> str | None:
    """The site the job was placed on (None while it is queued)."""
    job = stub.GetJob(pb.GetJobRequest(id=job_id), metadata=md(token)).job
    return job.site or None


def test_a_batch_bursts_within_the_route_limit_and_explain_agrees(
    route_limited: BrokerProcess, tmp_path: Path
) -> None:
    broker = route_limited
    holder = job_yaml(tmp_path, "holder", max_wait="1d", command="import time; time.sleep(120)")
    batch = [job_yaml(tmp_path, f"impatient{i}", max_wait="0s") for i in range(3)]
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        [held] = submit(broker, POOR, holder)
        wait_state(stub, held, {job_pb2.JOB_STATE_RUNNING}, token=POOR)

        ids = submit(broker, RICH, *batch)
        deadline = time.monotonic() + 120  # a pass and a launch; more than 20 s on a loaded box
        while not any(placed_at(stub, j, RICH) for j in ids) and time.monotonic() < deadline:
            time.sleep(0.2)
        burst = [j for j in ids if placed_at(stub, j, RICH) == "aws-east"]
        assert len(burst) == 1, [(j, placed_at(stub, j, RICH)) for j in ids]
        for job_id in set(ids) - set(burst):
            assert ROUTE_FULL in waiting_reason(stub, job_id, RICH)

        # Explain for one more such job says what the dispatcher then does with it.
        out = szb(broker, RICH, "explain", str(batch[0]), "-o", "json")
        decision = json.loads(out.stdout)["decision"]
        assert decision["action"] == "wait", decision
        assert any(ROUTE_FULL in r for r in decision["reasons"]), decision
        [late] = submit(broker, RICH, batch[0])
        assert ROUTE_FULL in waiting_reason(stub, late, RICH)
        for job_id in [held, *ids, late]:
            stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=md(RICH if job_id != held else POOR))


def test_a_budget_for_one_burst_pays_for_one_and_explain_agrees(
    budget_limited: BrokerProcess, tmp_path: Path
) -> None:
    broker = budget_limited
    holder = job_yaml(tmp_path, "holder", max_wait="1d", command="import time; time.sleep(120)")
    batch = [job_yaml(tmp_path, f"impatient{i}", max_wait="0s") for i in range(2)]
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        [held] = submit(broker, POOR, holder)
        wait_state(stub, held, {job_pb2.JOB_STATE_RUNNING}, token=POOR)
        ids = submit(broker, RICH, *batch)
        deadline = time.monotonic() + 120  # a pass and a launch; more than 20 s on a loaded box
        while not any(placed_at(stub, j, RICH) for j in ids) and time.monotonic() < deadline:
            time.sleep(0.2)
        burst = [j for j in ids if placed_at(stub, j, RICH) == "aws-east"]
        assert len(burst) == 1, [(j, placed_at(stub, j, RICH)) for j in ids]
        [other] = set(ids) - set(burst)
        assert "budget" in waiting_reason(stub, other, RICH)

        out = szb(broker, RICH, "explain", str(batch[0]), "-o", "json")
        decision = json.loads(out.stdout)["decision"]
        assert decision["action"] == "wait" and any("budget" in r for r in decision["reasons"]), decision
        for job_id in [held, *ids]:
            stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=md(RICH if job_id != held else POOR))
