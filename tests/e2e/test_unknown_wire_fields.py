"""A JobSpec carrying a field this broker does not know is refused as INVALID_ARGUMENT naming
where and its number, as a job YAML's unknown field is; it was accepted and dropped unread (a
newer client's constraint would then be ignored). Found by a held-out review."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import BrokerProcess
from tests.e2e.conftest import auth, write_broker_config
from tests.e2e.test_hostile_input import field_violations, job


def _varint_field(number: int, value: int = 1) -> bytes:
    """One varint field on the wire (tag, then value), values below 128."""
    tag, out = number << 3, b""
    while tag >= 0x80:
        out, tag = out + bytes([tag & 0x7F | 0x80]), tag >> 7
    return out + bytes([tag, value])


def _with_unknown(msg: job_pb2.JobSpec, number: int, where: str = "") -> job_pb2.JobSpec:
    """`msg` with field `number` (unknown to the broker) added to it or to its message `where`."""
    if not where:
        return job_pb2.JobSpec.FromString(msg.SerializeToString() + _varint_field(number))
    target = msg
    for part in where.split("."):
        target = getattr(target, part)
    target.MergeFromString(_varint_field(number))
    return msg


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[broker_service_pb2_grpc.BrokerServiceStub]:
    proc = BrokerProcess(write_broker_config(Path(tmp_path_factory.mktemp("unknown"))))
    proc.start()
    try:
        with grpc.insecure_channel(proc.address) as channel:
            yield broker_service_pb2_grpc.BrokerServiceStub(channel)
    finally:
        proc.stop()


def test_an_unknown_field_of_a_spec_or_of_a_message_in_it_is_refused(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
) -> None:
    # (SubmitJob names fields within its job, as its other violations; the spec itself is "")
    for where in ("", "resources.accelerators", "runtime_estimate"):
        spec = _with_unknown(job("unknown-field"), 99, where)
        with pytest.raises(grpc.RpcError) as caught:
            stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=auth("team-a"), timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (where, caught.value)
        said = field_violations(caught.value)
        assert "unknown field number 99" in said.get(where, ""), (where, said)
    batch = pb.SubmitJobsRequest(requests=[
        pb.SubmitJobRequest(job=job("fine")),
        pb.SubmitJobRequest(job=_with_unknown(job("unknown-field"), 1234, "resources")),
    ])
    with pytest.raises(grpc.RpcError) as caught:
        stub.SubmitJobs(batch, metadata=auth("team-a"), timeout=30)
    assert "unknown field number 1234" in field_violations(caught.value).get("requests[1].job.resources", "")
    listed = stub.ListJobs(pb.ListJobsRequest(), metadata=auth("team-a"), timeout=30).jobs
    assert not [j for j in listed if j.spec.name in ("unknown-field", "fine")], "a refused job was stored"
