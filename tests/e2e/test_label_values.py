"""Job label values: at most 63 characters and no control characters, on every way in.

List filters refused a too-long label; a submitted job must be held to the same, and a value
with NUL, a newline or another control character would break `szb list`'s one-line rows and
the PostgreSQL store (no NUL in text).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc
from tests.brokerproc import BrokerProcess, szb
from tests.e2e.conftest import PY, TOKENS, auth
from tests.e2e.test_jobs_api import _violations, spec

TENANT = "team-b"
BAD_VALUES = {
    "too-long": ("x" * 64, "longer than 63 characters"),
    "nul": ("a\x00b", "control character"),
    "newline": ("two\nlines", "control character"),
    "escape": ("\x1b[31mred", "control character"),
    "delete": ("del\x7f", "control character"),
    "c1": ("c1\x85", "control character"),
}


@pytest.fixture(scope="module")
def stub(broker: BrokerProcess) -> Iterator[broker_service_pb2_grpc.BrokerServiceStub]:
    with grpc.insecure_channel(broker.address) as channel:
        yield broker_service_pb2_grpc.BrokerServiceStub(channel)


def stored(stub: broker_service_pb2_grpc.BrokerServiceStub) -> int:
    return len(stub.ListJobs(pb.ListJobsRequest(page_size=1000), metadata=auth(TENANT)).jobs)


@pytest.mark.parametrize(("value", "text"), BAD_VALUES.values(), ids=list(BAD_VALUES))
def test_submit_job_refuses_a_bad_label_value_naming_its_key(
    stub: broker_service_pb2_grpc.BrokerServiceStub, value: str, text: str
) -> None:
    before = stored(stub)
    job = spec("labelled", [PY, "-c", "pass"], labels={"project": "glm", "team": value})
    with pytest.raises(grpc.RpcError) as err:
        stub.SubmitJob(pb.SubmitJobRequest(job=job), metadata=auth(TENANT))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = _violations(err.value)
    assert any(f == "labels" and "label team:" in d and text in d for f, d in found), found
    good = pb.SubmitJobRequest(job=spec("ok", [PY, "-c", "pass"]))
    with pytest.raises(grpc.RpcError) as err:
        stub.SubmitJobs(
            pb.SubmitJobsRequest(requests=[good, pb.SubmitJobRequest(job=job)]), metadata=auth(TENANT)
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert any(f == "requests[1].job.labels" and "label team:" in d for f, d in _violations(err.value))
    assert stored(stub) == before, "a refused job was stored"


def test_ordinary_label_values_are_kept(stub: broker_service_pb2_grpc.BrokerServiceStub) -> None:
    labels = {"team": "x" * 63, "note": "GLM 6B, fine-tune (v2)", "owner": "张三", "empty": ""}
    job = stub.SubmitJob(
        pb.SubmitJobRequest(job=spec("labels-ok", [PY, "-c", "pass"], labels=labels)), metadata=auth(TENANT)
    ).job
    assert dict(job.spec.labels) == labels


@pytest.mark.parametrize(
    ("yaml_value", "text"),
    [
        ("x" * 64, "longer than 63 characters"),
        ('"a\\0b"', "control character"),
        ('"tab\\there"', "control character"),
    ],
    ids=["too-long", "nul", "tab"],
)
def test_a_job_file_with_a_bad_label_value_is_refused_at_its_line(
    broker: BrokerProcess,
    stub: broker_service_pb2_grpc.BrokerServiceStub,
    tmp_path: Path,
    yaml_value: str,
    text: str,
) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(
        f"name: labelled\ncommand: [{PY}, -c, pass]\nruntime_estimate: 10m\n"
        f"labels:\n  project: glm\n  team: {yaml_value}\n"
    )
    before = stored(stub)
    done = szb(broker, TOKENS[TENANT], "submit", str(path))
    assert done.returncode != 0, done.stdout
    assert f"{path}:4:" in done.stderr and "label team:" in done.stderr and text in done.stderr, done.stderr
    assert stored(stub) == before
