"""`szb drain SITE` / `szb undrain SITE` through a running broker and the CLI: operators only, an
unknown site named, a drained site placed on by nothing new while its running job runs on, the
drain kept across a restart, shown in status, /metrics and the audit trail; undrain places at once."""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.auth import Role, token_entry_line
from tests.brokerproc import BrokerProcess, szb
from tests.e2e.conftest import TOKENS, auth, write_broker_config
from tests.e2e.test_jobs_api import spec

OPERATOR = "token-operator-drain-0123456789"
OP = (("authorization", f"Bearer {OPERATOR}"),)


def wait_for(check, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (got := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return got


def drained_gauge(proc: BrokerProcess) -> dict[str, float]:
    url = re.findall(r"metrics on (http://\S+/metrics)", "".join(proc.output))[-1]  # (the newest start's)
    asked = urllib.request.Request(url, headers={"Authorization": f"Bearer {OPERATOR}"})
    with urllib.request.urlopen(asked, timeout=10) as resp:
        text = resp.read().decode()
    return {s.labels["site"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == "szb_site_drained"}


def state(stub: broker_service_pb2_grpc.BrokerServiceStub, job_id: str) -> job_pb2.Job:
    return stub.GetJob(pb.GetJobRequest(id=job_id), metadata=OP).job


def test_drain_keeps_new_work_off_a_site_and_undrain_places_at_once(tmp_path: Path) -> None:
    config = write_broker_config(tmp_path)
    with config.open("a") as f:
        f.write("metrics_listen: 127.0.0.1:0\n")
    with (tmp_path / "tokens.yaml").open("a") as f:
        f.write(token_entry_line("ops", OPERATOR, Role.OPERATOR, "alice") + "\n")
    proc = BrokerProcess(config)
    proc.start(timeout=120)
    try:
        with grpc.insecure_channel(proc.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            with pytest.raises(grpc.RpcError) as denied:  # a tenant may not
                stub.DrainSite(pb.DrainSiteRequest(site="local"), metadata=auth("team-a"))
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert denied.value.details() == "only operators may drain a site"

            with pytest.raises(grpc.RpcError) as no_reason:
                stub.DrainSite(pb.DrainSiteRequest(site="local", reason="  "), metadata=OP)
            assert no_reason.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "reason" in no_reason.value.details()
            unknown = szb(proc, OPERATOR, "drain", "locl", "--reason", "x")
            assert unknown.returncode == 1
            assert "site 'locl' is not in the policy in force (did you mean 'local'?)" in unknown.stderr

            running = stub.SubmitJob(pb.SubmitJobRequest(job=spec("long", ["sleep", "60"])),
                                     metadata=auth("team-a")).job
            wait_for(lambda: state(stub, running.id).state == job_pb2.JOB_STATE_RUNNING)

            done = szb(proc, OPERATOR, "drain", "local", "--reason", "rack 4 maintenance")
            assert done.returncode == 0, done.stderr
            said = " ".join(done.stdout.split())
            assert "site local drained by alice" in said and "1 job(s) there run to their end" in said, said

            waiting = stub.SubmitJob(pb.SubmitJobRequest(job=spec("after", ["true"])),
                                     metadata=auth("team-b")).job
            time.sleep(1.5)  # several passes (0.2 s each)
            assert state(stub, waiting.id).state == job_pb2.JOB_STATE_QUEUED
            why = "site local drained by alice: rack 4 maintenance"
            explained = stub.ExplainPlacement(pb.ExplainPlacementRequest(job_id=waiting.id),
                                              metadata=auth("team-b")).explanation
            reasons = [r.message for o in explained.offers for r in o.reasons]
            assert why in reasons, reasons
            assert not explained.HasField("chosen") or not explained.chosen.site
            assert why in state(stub, waiting.id).message  # (szb get and szb list say it too)
            # The job already there runs on: a drain is no preemption.
            assert state(stub, running.id).state == job_pb2.JOB_STATE_RUNNING

            shown = szb(proc, TOKENS["team-b"], "status")  # a tenant sees why its job waits
            assert shown.returncode == 0, shown.stderr
            assert "drained local by alice" in " ".join(shown.stdout.split()), shown.stdout
            listed = szb(proc, OPERATOR, "drain")
            assert "rack 4 maintenance" in listed.stdout and "alice" in listed.stdout, listed.stdout
            assert drained_gauge(proc) == {"local": 1.0}

        proc.stop()
        proc.restart()  # kept in the store
        with grpc.insecure_channel(proc.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            [kept] = stub.GetStatus(pb.GetStatusRequest(), metadata=OP).drains
            assert (kept.site, kept.by, kept.reason) == ("local", "alice", "rack 4 maintenance")
            time.sleep(1.0)
            assert state(stub, waiting.id).state == job_pb2.JOB_STATE_QUEUED

            back = szb(proc, OPERATOR, "undrain", "local")
            assert back.returncode == 0, back.stderr
            assert "site local back in service" in " ".join(back.stdout.split()), back.stdout
            wait_for(lambda: state(stub, waiting.id).state != job_pb2.JOB_STATE_QUEUED, timeout=5)
            assert drained_gauge(proc) == {"local": 0.0}
            again = szb(proc, OPERATOR, "undrain", "local")
            assert again.returncode == 0 and "was not drained" in again.stdout, again.stdout
            nowhere = szb(proc, OPERATOR, "undrain", "nowhere")
            assert nowhere.returncode == 1 and "site 'nowhere' is not in the policy" in nowhere.stderr

            trail = stub.ListAuditEvents(pb.ListAuditEventsRequest(), metadata=OP).events
            kinds = ("drained", "undrained")
            drains = [(e.kind, e.actor, e.site, e.message) for e in trail if e.kind in kinds]
            assert drains == [
                ("drained", "alice", "local", "site local drained: rack 4 maintenance"),
                ("undrained", "alice", "local", "site local undrained (was drained: rack 4 maintenance)"),
            ], drains
            audit = szb(proc, OPERATOR, "audit")
            assert "undrained" in audit.stdout and "rack 4 maintenance" in audit.stdout, audit.stdout
            # (the job a drain let run: it ran through the restart; ended here, as the test is done)
            stub.CancelJob(pb.CancelJobRequest(id=running.id), metadata=OP)
            ended = {job_pb2.JOB_STATE_CANCELLED, job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED}
            wait_for(lambda: state(stub, running.id).state in ended)
    finally:
        proc.stop()
