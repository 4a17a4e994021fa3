"""A reload that takes back a tenant's `high` priority grant lowers its queued `high` jobs.

team-a is granted low, normal and high; its 4-GPU `high` job waits behind team-b's job holding
the whole a800 partition. A reload grants team-a only low and normal: the waiting job must drop
to normal (its tenant's highest allowed priority), with an event saying so, instead of keeping
a priority its tenant no longer has.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import BrokerProcess
from tests.e2e.conftest import POLICY, PY, auth, write_broker_config
from tests.e2e.test_jobs_api import TERMINAL, spec, submit, wait_for
from tests.e2e.test_policy_reload import policy_hash, wait_hash
from tests.ha.cloud import wait_until
from tests.job_events import events_until

GRANTED = "{id: team-a, kind: university, entity_country: CN, share: {priorities: [low, normal, high]}}"
TAKEN_BACK = "{id: team-a, kind: university, entity_country: CN, share: {priorities: [low, normal]}}"
SLEEP = [PY, "-c", "import time; time.sleep(600)"]


def test_a_reload_taking_back_high_lowers_queued_high_jobs(tmp_path: Path) -> None:
    config = write_broker_config(tmp_path)
    policy = POLICY.replace("{id: team-a, kind: university, entity_country: CN}", GRANTED)
    assert policy != POLICY
    (tmp_path / "policy.yaml").write_text(policy)
    broker = BrokerProcess(config)
    broker.start()
    jobs: list[tuple[str, str]] = []
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            busy = submit(stub, spec("busy", SLEEP, gpus=4), tenant="team-b").job.id
            jobs.append((busy, "team-b"))
            wait_for(stub, busy, {job_pb2.JOB_STATE_RUNNING}, tenant="team-b")
            urgent = submit(stub, spec("urgent", SLEEP, gpus=4, priority=job_pb2.PRIORITY_HIGH)).job.id
            jobs.append((urgent, "team-a"))

            def job() -> job_pb2.Job:
                got: job_pb2.Job = stub.GetJob(pb.GetJobRequest(id=urgent), metadata=auth("team-a")).job
                return got

            wait_until("the high job waits", lambda: job().pending_reason)
            assert job().spec.priority == job_pb2.PRIORITY_HIGH

            old = policy_hash(stub)
            (tmp_path / "policy.yaml").write_text(policy.replace(GRANTED, TAKEN_BACK))
            wait_hash(stub, old)
            normal = job_pb2.PRIORITY_NORMAL
            wait_until("the queued high job drops to normal", lambda: job().spec.priority == normal)
            assert job().state == job_pb2.JOB_STATE_QUEUED

            said = events_until(
                stub, urgent, auth("team-a"), lambda ev: any(e.kind == "priority_lowered" for e in ev)
            )
            lowered = [e for e in said if e.kind == "priority_lowered"]
            assert len(lowered) == 1, [(e.kind, e.message) for e in said]
            assert "high" in lowered[0].message and "normal" in lowered[0].message, lowered[0].message
    finally:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            for job_id, tenant in jobs:
                stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth(tenant))
            for job_id, tenant in jobs:
                wait_for(stub, job_id, TERMINAL, tenant=tenant, timeout=60)
        broker.stop()
