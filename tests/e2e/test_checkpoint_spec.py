"""`checkpoint: {interval: 30m}` in the job spec: file, wire, store and back (issue 15)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc
from broker.jobfile import JobFileError, load_job_file
from broker.serde import spec_from_proto, spec_to_proto
from tests.brokerproc import BrokerProcess
from tests.e2e.conftest import PY, auth
from tests.e2e.test_jobs_api import TERMINAL, _violations, spec, wait_for


@pytest.fixture(scope="module")
def stub(broker: BrokerProcess) -> Iterator[broker_service_pb2_grpc.BrokerServiceStub]:
    with grpc.insecure_channel(broker.address) as channel:
        yield broker_service_pb2_grpc.BrokerServiceStub(channel)


def test_job_file_checkpoint_round_trips_through_the_wire(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(
        "name: long-train\ncommand: [python, train.py]\nruntime_estimate: 40h\ncheckpoint: {interval: 30m}\n"
    )
    loaded = load_job_file(path)
    assert loaded.checkpoint is not None and loaded.checkpoint.interval.total_seconds() == 1800
    assert spec_from_proto(spec_to_proto(loaded)) == loaded
    bare = loaded.model_copy(update={"checkpoint": None})
    assert not spec_to_proto(bare).HasField("checkpoint")
    assert spec_from_proto(spec_to_proto(bare)) == bare


def test_bad_checkpoint_in_a_job_file_names_the_field_and_line(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("name: j\ncommand: [x]\nruntime_estimate: 1h\ncheckpoint:\n  interval: 0s\n")
    with pytest.raises(JobFileError) as err:
        load_job_file(path)
    text = str(err.value)
    assert f"{path}:5:" in text and "checkpoint.interval" in text and "must be > 0" in text


def test_submitted_checkpoint_is_stored_and_returned(stub: broker_service_pb2_grpc.BrokerServiceStub) -> None:
    msg = spec("ckpt-ok", [PY, "-c", "pass"], runtime_s=7200)  # (a checkpoint within the run)
    msg.checkpoint.interval.CopyFrom(duration_pb2.Duration(seconds=1800))
    job_id = stub.SubmitJob(pb.SubmitJobRequest(job=msg), metadata=auth("team-a")).job.id
    got = stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth("team-a")).job
    assert got.spec.HasField("checkpoint") and got.spec.checkpoint.interval.seconds == 1800


def test_bad_checkpoint_is_invalid_argument_naming_the_field(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
) -> None:
    msg = spec("ckpt-bad", [PY, "-c", "pass"])
    msg.checkpoint.interval.CopyFrom(duration_pb2.Duration(seconds=-60))
    with pytest.raises(grpc.RpcError) as err:
        stub.SubmitJob(pb.SubmitJobRequest(job=msg), metadata=auth("team-a"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = _violations(err.value)
    assert any(f == "checkpoint.interval" and "must be > 0" in d for f, d in found), found


@pytest.mark.parametrize(
    ("checkpoint", "where", "message"),
    [
        ("{interval: 2h}", "4:24", "checkpoint.interval: must be shorter than runtime_estimate (2h)"),
        ("{interval: 3h}", "4:24", "checkpoint.interval: must be shorter than runtime_estimate (2h)"),
        ("{interval: 30 minutes}", "4:24", "checkpoint.interval: must be a duration such as 30m"),
        ("{interval: -5m}", "4:24", "checkpoint.interval: must be a duration such as 30m"),
        ("{interval: 30m, keep: 3}", "4:29", "checkpoint.keep: unknown field"),
        ("{}", "4:1", "checkpoint.interval: required"),
        ("30m", "4:13", "checkpoint: must be a mapping such as {interval: 30m}"),
    ],
)
def test_a_bad_checkpoint_names_the_field_and_its_position(
    tmp_path: Path, checkpoint: str, where: str, message: str
) -> None:
    """#15 review: every bad checkpoint is refused at its line, the interval against the run too."""
    path = tmp_path / "job.yaml"
    path.write_text(f"name: j\ncommand: [x]\nruntime_estimate: 2h\ncheckpoint: {checkpoint}\n")
    with pytest.raises(JobFileError) as err:
        load_job_file(path)
    assert f"{path}:{where}: error: {message}" in str(err.value), str(err.value)


def test_a_checkpoint_no_more_often_than_the_run_is_invalid_argument(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
) -> None:
    msg = spec("ckpt-late", [PY, "-c", "pass"], runtime_s=3600)
    msg.checkpoint.interval.CopyFrom(duration_pb2.Duration(seconds=3600))
    with pytest.raises(grpc.RpcError) as err:
        stub.SubmitJob(pb.SubmitJobRequest(job=msg), metadata=auth("team-a"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = _violations(err.value)
    assert any(f == "checkpoint.interval" and "shorter than runtime_estimate (1h)" in d for f, d in found), (
        found
    )
    batch = pb.SubmitJobsRequest(requests=[pb.SubmitJobRequest(job=msg)])
    with pytest.raises(grpc.RpcError) as err:
        stub.SubmitJobs(batch, metadata=auth("team-a"))
    assert any(f == "requests[0].job.checkpoint.interval" for f, _ in _violations(err.value))


def test_a_checkpointing_job_is_told_its_interval_and_attempt(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
) -> None:
    # Spot is priced on the job resuming from its own checkpoints: the job must learn how often
    # it is expected to save and whether an earlier attempt may have saved one.
    env = "os.environ.get('SZB_CHECKPOINT_INTERVAL_S'), os.environ['SZB_ATTEMPT_NUMBER']"
    code = f"import os; print('ckpt', {env})"
    msg = spec("ckpt-env", [PY, "-c", code], runtime_s=7200)
    msg.checkpoint.interval.CopyFrom(duration_pb2.Duration(seconds=1800))
    bare = spec("ckpt-none", [PY, "-c", code])
    ids = [stub.SubmitJob(pb.SubmitJobRequest(job=m), metadata=auth("team-a")).job.id for m in (msg, bare)]
    tails = [wait_for(stub, i, TERMINAL).log_tail for i in ids]
    assert "ckpt 1800 1" in tails[0], tails[0]
    assert "ckpt None 1" in tails[1], tails[1]
