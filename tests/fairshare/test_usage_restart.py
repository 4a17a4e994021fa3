"""Decayed fair-share usage survives a broker restart (issue 14): a real `szb serve` on the
local executor is killed (SIGKILL) after one tenant used the on-prem slot, then restarted; the
tenant that used nothing still goes first, as it would have without the restart.
"""

from __future__ import annotations

import shutil
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.auth import hash_token
from broker.store import SqliteStore
from tests.brokerproc import JOB_PYTHON, ROOT, BrokerProcess
from tests.local_policy import a800, local_policy

TOKENS = {t: f"token-{t}-restart-0123456789" for t in ("heavy", "light", "other")}
POLICY = local_policy(
    "".join(f"  - {{id: {t}, kind: university, entity_country: CN}}\n" for t in ("heavy", "light", "other")),
    a800(1),
    rest="fair_share: {half_life: 1d}\n",
    objective=True,
)
DONE = {job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    for name in ("accelerators.yaml", "regimes.yaml"):
        shutil.copy(ROOT / "configs" / name, tmp_path / name)
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "tokens.yaml").write_text(
        "tokens:\n" + "".join(f"  - {{tenant: {t}, sha256: {hash_token(v)}}}\n" for t, v in TOKENS.items())
    )
    (tmp_path / "broker.yaml").write_text(
        textwrap.dedent("""\
        data_dir: data
        policy: policy.yaml
        tokens_file: tokens.yaml
        dispatch: {poll_interval_s: 0.2}
        """)
    )
    proc = BrokerProcess(tmp_path / "broker.yaml")
    proc.start()
    yield proc
    proc.stop()


def job(name: str, seconds: float, until: Path | None = None) -> job_pb2.JobSpec:
    """A one-A800 job that sleeps `seconds`, or, given `until`, runs until that file exists."""
    code = f"import time; time.sleep({seconds})"
    if until is not None:
        code = f"import os, time\nwhile not os.path.exists({str(until)!r}): time.sleep(0.05)"
    msg = job_pb2.JobSpec(
        name=name,
        command=[JOB_PYTHON, "-c", code],
        runtime_estimate=duration_pb2.Duration(seconds=60),
    )
    msg.resources.accelerators.count = 1
    msg.resources.accelerators.any_of.append("A800")
    return msg


def submit(stub: broker_service_pb2_grpc.BrokerServiceStub, tenant: str, spec: job_pb2.JobSpec) -> str:
    md = (("authorization", f"Bearer {TOKENS[tenant]}"),)
    return str(stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=md).job.id)


def wait(
    stub: broker_service_pb2_grpc.BrokerServiceStub, tenant: str, job_id: str, states: set[int]
) -> job_pb2.Job:
    md = (("authorization", f"Bearer {TOKENS[tenant]}"),)
    deadline = time.monotonic() + 60
    while True:
        got = stub.GetJob(pb.GetJobRequest(id=job_id), metadata=md).job
        if got.state in states:
            return got
        assert time.monotonic() < deadline, f"{job_id} stuck: {got.message}"
        time.sleep(0.1)


def until(ok: Callable[[], bool], what: Callable[[], str], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not ok():
        assert time.monotonic() < deadline, what()
        time.sleep(0.1)


def heavy_usage(broker: BrokerProcess) -> float:
    """`heavy`'s accelerator-seconds in the fair-share ledger the broker saved to its store."""
    store = SqliteStore(broker.config.parent / "data" / "broker.db")
    try:
        usage = store.load_fair_usage()
    finally:
        store.close()
    return usage.sums.get("heavy", (0.0, 0.0, 0.0))[0] if usage is not None else 0.0


def started_at(broker: BrokerProcess, job_id: str) -> float:
    store = SqliteStore(broker.config.parent / "data" / "broker.db")
    try:
        [attempt] = store.attempts_for(job_id)  # type: ignore[arg-type]
        return attempt.created_at.timestamp()
    finally:
        store.close()


def test_decayed_usage_survives_a_broker_restart(broker: BrokerProcess) -> None:
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        used = [submit(stub, "heavy", job(f"warm-{i}", 1.0)) for i in range(2)]
        for job_id in used:
            assert wait(stub, "heavy", job_id, DONE).state == job_pb2.JOB_STATE_SUCCEEDED
        # The ledger is saved at a dispatch pass after a job ends (a fixed 1 s could pass with no
        # pass on a loaded box, and the kill would then lose what the test is about).
        until(lambda: heavy_usage(broker) > 0, lambda: "heavy's usage was never saved")
    broker.kill()
    broker.restart()
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        # The blocker holds the slot until both have asked (a fixed 2 s could end first on a
        # loaded box, and `heavy` would then start alone, before `light` asked at all).
        release = Path(tempfile.mkdtemp(prefix="szb-release-"))
        release.chmod(0o755)  # the job may run under its own uid
        try:
            blocker = submit(stub, "other", job("blocker", 0, until=release / "go"))
            wait(stub, "other", blocker, {job_pb2.JOB_STATE_RUNNING})
            # `heavy` asks first; `light` has used nothing, so fair share serves it first.
            heavy = submit(stub, "heavy", job("again", 0.5))
            time.sleep(0.3)
            light = submit(stub, "light", job("first", 0.5))
        finally:
            (release / "go").touch()
        wait(stub, "heavy", heavy, DONE)
        wait(stub, "light", light, DONE)
        shutil.rmtree(release)
    assert started_at(broker, light) < started_at(broker, heavy)
