"""A drain asked of an API replica is kept in PostgreSQL and obeyed by the scheduler, a separate
process; a scheduler elected later still obeys it, and an undrain through the replica places at once."""

from __future__ import annotations

import time

import grpc

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.auth import Role, token_entry_line
from tests.e2e.conftest import auth
from tests.e2e.test_jobs_api import spec
from tests.ha.conftest import Cluster

OPERATOR = "token-operator-drain-ha-0123456789"
OP = (("authorization", f"Bearer {OPERATOR}"),)


def job_state(stub: broker_service_pb2_grpc.BrokerServiceStub, job_id: str) -> int:
    return stub.GetJob(pb.GetJobRequest(id=job_id), metadata=OP).job.state


def test_a_replica_drains_and_the_scheduler_obeys_across_a_takeover(cluster: Cluster) -> None:
    with (cluster.config.parent / "tokens.yaml").open("a") as f:
        f.write(token_entry_line("ops", OPERATOR, Role.OPERATOR, "alice") + "\n")
    api = cluster.start("api")
    first = cluster.start("scheduler")
    cluster.leader()
    with grpc.insecure_channel(api.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        done = stub.DrainSite(pb.DrainSiteRequest(site="local", reason="kernel upgrade"), metadata=OP)
        assert (done.drain.site, done.drain.by) == ("local", "alice")
        waiting = stub.SubmitJob(pb.SubmitJobRequest(job=spec("w", ["true"])), metadata=auth("team-a")).job
        time.sleep(2.0)  # the scheduler's passes (0.2 s) decide it: it waits
        assert job_state(stub, waiting.id) == job_pb2.JOB_STATE_QUEUED
        assert first.said("operator.drain: site local drained by alice: kernel upgrade"), first.text()

        first.kill()  # a scheduler elected after the drain reads it from the store too
        second = cluster.start("scheduler")
        cluster.leader(among=[second])
        time.sleep(2.0)
        assert job_state(stub, waiting.id) == job_pb2.JOB_STATE_QUEUED
        assert second.said("operator.drain: site local drained by alice"), second.text()
        assert [d.site for d in stub.GetStatus(pb.GetStatusRequest(), metadata=OP).drains] == ["local"]

        lifted = stub.UndrainSite(pb.UndrainSiteRequest(site="local"), metadata=OP).lifted
        assert lifted.reason == "kernel upgrade"
        deadline = time.monotonic() + 10
        while job_state(stub, waiting.id) == job_pb2.JOB_STATE_QUEUED:
            assert time.monotonic() < deadline, "the undrained site took no job"
            time.sleep(0.1)
        trail = stub.ListAuditEvents(pb.ListAuditEventsRequest(), metadata=OP).events
        assert [(e.kind, e.actor) for e in trail if e.kind.endswith("drained")] == [
            ("drained", "alice"), ("undrained", "alice")
        ]
