"""Operator actions refused to a tenant are in the operator's audit trail: who tried what on which
site or job, the answer's code and why, through a real `szb serve` and real gRPC, with the
answers unchanged (a cancel of another tenant's job reads as one of no job at all), and a
tenant repeating a refused call writes at most its per-minute share."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc
from broker.auth import Role, token_entry_line
from broker.refused_calls import PER_MINUTE
from tests.brokerproc import BrokerProcess, szb
from tests.e2e.conftest import TOKENS, auth, write_broker_config
from tests.e2e.test_jobs_api import spec

OPERATOR = "token-operator-refused-0123456789"
OP = (("authorization", f"Bearer {OPERATOR}"),)


def refused(
    stub: broker_service_pb2_grpc.BrokerServiceStub, job_id: str = "", tenant: str = ""
) -> list[pb.AuditEvent]:
    trail = stub.ListAuditEvents(pb.ListAuditEventsRequest(job_id=job_id, tenant=tenant), metadata=OP).events
    return [e for e in trail if e.kind == "action_refused"]


def test_refused_drains_and_cancels_are_audited_with_who_and_why(tmp_path: Path) -> None:
    config = write_broker_config(tmp_path)
    with (tmp_path / "tokens.yaml").open("a") as f:
        f.write(token_entry_line("ops", OPERATOR, Role.OPERATOR, "alice") + "\n")
    proc = BrokerProcess(config)
    proc.start(timeout=120)
    try:
        with grpc.insecure_channel(proc.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            drain = szb(proc, TOKENS["team-a"], "drain", "local", "--reason", "x")
            assert drain.returncode == 1 and "only operators may drain a site" in drain.stderr, drain.stderr
            with pytest.raises(grpc.RpcError) as undrain:
                stub.UndrainSite(pb.UndrainSiteRequest(site="local"), metadata=auth("team-a"))
            assert undrain.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert undrain.value.details() == "only operators may undrain a site"

            theirs = stub.SubmitJob(pb.SubmitJobRequest(job=spec("b-job", ["sleep", "30"])),
                                    metadata=auth("team-b")).job
            answers = {}
            for job_id in (theirs.id, "j-00000000000000000000000000"):
                with pytest.raises(grpc.RpcError) as cancel:
                    stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth("team-a"))
                assert cancel.value.code() == grpc.StatusCode.NOT_FOUND
                answers[job_id] = cancel.value.details().replace(job_id, "ID")
            assert len(set(answers.values())) == 1, answers  # nothing tells the caller the job exists
            assert szb(proc, TOKENS["team-b"], "get", theirs.id).returncode == 0  # not cancelled

            got = [(e.tenant, e.actor, e.site, e.job_id, e.message) for e in refused(stub)]
            assert got == [
                ("team-a", "team-a", "local", "",
                 "drain local refused (PERMISSION_DENIED): only operators may drain a site "
                 "(reason given: 'x')"),
                ("team-a", "team-a", "local", "",
                 "undrain local refused (PERMISSION_DENIED): only operators may undrain a site"),
                ("team-a", "team-a", "", theirs.id,
                 f"cancel {theirs.id} refused (NOT_FOUND): the job is tenant team-b's"),
                ("team-a", "team-a", "", "j-00000000000000000000000000",
                 "cancel j-00000000000000000000000000 refused (NOT_FOUND): no such job"),
            ], got
            assert [e.job_id for e in refused(stub, job_id=theirs.id)] == [theirs.id]
            assert refused(stub, tenant="team-b") == []

            shown = szb(proc, OPERATOR, "audit", "--tenant", "team-a")
            assert shown.returncode == 0, shown.stderr
            flat = " ".join(shown.stdout.split())
            assert "action_refused" in flat and "reason given: 'x'" in flat, shown.stdout

            for _ in range(PER_MINUTE + 5):  # a flood: the minute's share is written, no more
                with pytest.raises(grpc.RpcError):
                    stub.DrainSite(pb.DrainSiteRequest(site="local", reason="again"), metadata=auth("team-a"))
            assert len(refused(stub)) == PER_MINUTE
            stub.CancelJob(pb.CancelJobRequest(id=theirs.id), metadata=OP)
    finally:
        proc.stop()
