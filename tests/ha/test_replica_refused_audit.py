"""An API replica audits the submissions policy refuses, as a single broker does; a store error
while recording one leaves the caller's refusal as it was (FAILED_PRECONDITION, not INTERNAL)."""

from __future__ import annotations

import grpc
import psycopg
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc
from broker.auth import Role, token_entry_line
from tests.e2e.conftest import auth
from tests.e2e.test_cli_ux import error_info
from tests.e2e.test_jobs_api import spec
from tests.ha.conftest import Cluster

OPERATOR = "token-operator-replica-0123456789"
FAIL_INSERTS = """
CREATE FUNCTION refuse_insert() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device'; END $$;
CREATE TRIGGER refuse_insert BEFORE INSERT ON refused_submissions
  FOR EACH ROW EXECUTE FUNCTION refuse_insert();
"""


def refuse(stub: broker_service_pb2_grpc.BrokerServiceStub, name: str) -> grpc.RpcError:
    """Eight A800 where a node has four: refused by policy (hardware.fit) at the door."""
    with pytest.raises(grpc.RpcError) as err:
        stub.SubmitJob(pb.SubmitJobRequest(job=spec(name, ["true"], gpus=8)), metadata=auth("team-b"))
    return err.value


def test_a_replica_audits_refusals_and_a_store_error_keeps_the_refusal(cluster: Cluster) -> None:
    with (cluster.config.parent / "tokens.yaml").open("a") as f:
        f.write(token_entry_line("ops", OPERATOR, Role.OPERATOR, "alice") + "\n")
    api = cluster.start("api")
    cluster.start("scheduler")
    cluster.leader()
    op = (("authorization", f"Bearer {OPERATOR}"),)
    with grpc.insecure_channel(api.address) as channel, psycopg.connect(cluster.dsn, autocommit=True) as db:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        db.execute(FAIL_INSERTS)  # type: ignore[arg-type]
        lost = refuse(stub, "while-the-disk-is-full")
        db.execute("DROP TRIGGER refuse_insert ON refused_submissions")
        kept = refuse(stub, "eight-a800")
        trail = stub.ListAuditEvents(pb.ListAuditEventsRequest(tenant="team-b"), metadata=op).events
    for err in (lost, kept):
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()
        assert error_info(err) == "NO_ALLOWED_OFFER"
    # (The replica's log is read by a thread: its line may come in just after the answer did.)
    assert api.said("could not be kept in the audit trail"), api.text()
    assert api.said("No space left", timeout=5), api.text()
    refused = [e for e in trail if e.kind == "refused"]
    assert [e.message.split(":")[0] for e in refused] == ["job 'eight-a800' refused"], trail
    assert refused[0].rule_ids == ["hardware.fit"] and refused[0].actor == "team-b"
    assert refused[0].policy_hash and not refused[0].job_id
