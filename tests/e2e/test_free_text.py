"""Free text a tenant sends that the broker stores and shows: no control characters, bounded.

A client_id (the idempotency key of SubmitJob) and accelerator names are stored with the job
and printed back in listings, logs and errors: a line break, NUL or terminal escape sequence in
them would forge lines in a one-line listing, rewrite an operator's terminal or (NUL) fail to
store on PostgreSQL. Both are refused as labels are, INVALID_ARGUMENT naming the field.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc
from tests.brokerproc import JOB_PYTHON, BrokerProcess, szb
from tests.e2e.conftest import TOKENS, auth
from tests.e2e.test_hostile_input import field_violations, job

CONTROL = ["line\nbreak", "nul\x00byte", "esc\x1b[2Jape", "del\x7f", "c1\x9bcsi", "tab\there", "cr\rhere"]


@pytest.mark.parametrize("client_id", CONTROL)
def test_a_client_id_with_a_control_character_is_refused_naming_it(
    broker: BrokerProcess, client_id: str
) -> None:
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.SubmitJob(pb.SubmitJobRequest(job=job(), client_id=client_id), metadata=auth("team-a"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
        assert "control character" in field_violations(err.value).get("client_id", ""), err.value.details()
        good = f"fine-{uuid.uuid4().hex}"
        batch = pb.SubmitJobsRequest(
            requests=[
                pb.SubmitJobRequest(job=job(), client_id=good),
                pb.SubmitJobRequest(job=job(), client_id=client_id),
            ]
        )
        with pytest.raises(grpc.RpcError) as err:
            stub.SubmitJobs(batch, metadata=auth("team-a"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "control character" in field_violations(err.value).get("requests[1].client_id", "")
        # Nothing of the refused batch was stored: its good client_id is still free.
        created = stub.SubmitJob(pb.SubmitJobRequest(job=job(), client_id=good), metadata=auth("team-a"))
        assert created.created


def test_a_long_client_id_is_refused_and_printable_unicode_is_kept(broker: BrokerProcess) -> None:
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.SubmitJob(pb.SubmitJobRequest(job=job(), client_id="x" * 10_000), metadata=auth("team-a"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "at most" in field_violations(err.value).get("client_id", "")
        # Printable text in any script (and spaces) is still a valid key, and still idempotent.
        key = "训练 run-7 ✓"
        first = stub.SubmitJob(pb.SubmitJobRequest(job=job(), client_id=key), metadata=auth("team-a"))
        again = stub.SubmitJob(pb.SubmitJobRequest(job=job(), client_id=key), metadata=auth("team-a"))
        assert first.created and not again.created
        assert again.job.id == first.job.id and again.job.client_id == key
        stub.CancelJob(pb.CancelJobRequest(id=first.job.id), metadata=auth("team-a"))


@pytest.mark.parametrize("name", ["A800\n", "A800\x1b[31m", "A\x00800"])
def test_an_accelerator_name_with_a_control_character_is_refused_naming_it(
    broker: BrokerProcess, name: str
) -> None:
    msg = job()
    msg.resources.accelerators.count = 1
    msg.resources.accelerators.any_of.append(name)
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        for field, call in (
            (
                "resources.accelerators.any_of",
                lambda: stub.SubmitJob(pb.SubmitJobRequest(job=msg), metadata=auth("team-a")),
            ),
            (
                "job.resources.accelerators.any_of",
                lambda: stub.ExplainPlacement(pb.ExplainPlacementRequest(job=msg), metadata=auth("team-a")),
            ),
        ):
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
            violations = field_violations(err.value)
            assert "control character" in violations.get(field, ""), violations


def test_szb_submit_says_when_its_client_id_named_an_earlier_job(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    # The same key with another file returns the earlier job (as documented): a user who edited
    # the file and resubmitted must be told that nothing new ran, not see exit 0 alone.
    key = f"nightly-{uuid.uuid4().hex[:8]}"
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    for path, seconds in ((first, 60), (second, 1)):
        sleep = f"import time; time.sleep({seconds})"
        path.write_text(f"name: {path.stem}\ncommand: [{JOB_PYTHON}, -c, '{sleep}']\nruntime_estimate: 5m\n")
    created = szb(broker, TOKENS["team-a"], "submit", str(first), "--client-id", key, "-o", "json")
    assert created.returncode == 0 and "already names" not in created.stderr, created.stderr
    job_id = json.loads(created.stdout)[0]["id"]
    again = szb(broker, TOKENS["team-a"], "submit", str(second), "--client-id", key)
    assert again.returncode == 0, again.stderr
    said = again.stderr
    assert f"already names job {job_id} (first)" in said and "nothing new" in said, said
    szb(broker, TOKENS["team-a"], "cancel", job_id)


# Invisible, bidi and separator characters, and whitespace at an end: "A800\u202e" ran on A800 and
# was stored and listed verbatim (a name that reads one way and is another), as did a client_id.
INVISIBLE = [
    ("A800\u202e", "U+202E"),
    ("A800\u200b", "U+200B"),
    ("A800\ufeff", "U+FEFF"),
    ("A800\u2028", "U+2028"),
    ("A800\xa0", "U+00A0"),
    ("A800 ", "U+0020"),
    (" A800", "U+0020"),
]


@pytest.mark.parametrize(("name", "said"), INVISIBLE)
def test_an_identifier_with_an_invisible_character_is_refused_naming_it(
    broker: BrokerProcess, name: str, said: str
) -> None:
    msg = job()
    msg.resources.accelerators.count = 1
    msg.resources.accelerators.any_of.append(name)
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        for field, request in (
            ("resources.accelerators.any_of", pb.SubmitJobRequest(job=msg)),
            ("client_id", pb.SubmitJobRequest(job=job(), client_id=name)),
        ):
            with pytest.raises(grpc.RpcError) as err:
                stub.SubmitJob(request, metadata=auth("team-a"))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
            violations = field_violations(err.value)
            assert said in violations.get(field, ""), violations
