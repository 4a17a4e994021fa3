"""A local job's output file is capped (`max_output_bytes`): a job printing without end cannot
fill the disk the broker's store lives on, keeps running, and `szb logs` still shows its end."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2

from adapters.base import ConfigError
from adapters.local import LocalAdapter
from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.model import SiteId
from tests.brokerproc import ROOT, BrokerProcess, write_broker_folder
from tests.brokerproc import szb as run_szb
from tests.e2e.conftest import POLICY, PY, TOKENS, auth

CAP = 256 * 1024
TERMINAL = {job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED}
# 8 MiB of output (32 times the cap), its end, then it waits for the test's go before its last line.
SCRIPT = """\
import os, sys, time
sys.stdout.write("HEAD-MARK\\n")
line = "x" * 1023 + "\\n"
for _ in range(8192):
    sys.stdout.write(line)
sys.stdout.write("THE-END\\n")
sys.stdout.flush()
while not os.path.exists(sys.argv[1]):
    time.sleep(0.1)
print("AFTER-GO", flush=True)
"""


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    extra = f"sites:\n  local: {{cancel_grace_s: 2, max_output_bytes: {CAP}}}\n"
    proc = BrokerProcess(
        write_broker_folder(tmp_path_factory.mktemp("capped"), POLICY, TOKENS, broker_extra=extra)
    )
    proc.start()
    yield proc
    proc.stop()


def wait_for(
    stub: broker_service_pb2_grpc.BrokerServiceStub, job_id: str, done: Callable[[job_pb2.Job], bool]
) -> job_pb2.Job:
    deadline = time.monotonic() + 120
    while True:
        job = stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth("team-a")).job
        if done(job) or time.monotonic() > deadline:
            return job
        time.sleep(0.2)


def wait_until_printed(broker: BrokerProcess, job_id: str, text: bytes) -> Path:
    """The job's output file, once the job printed `text` (its attempt record has it: in the
    output file, or past a cut in the tail the runner keeps beside it)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for attempt in (broker.config.parent / "data" / "local").iterdir():
            if attempt.name.startswith(job_id):
                for name in ("output.tail", "output.log"):
                    with contextlib.suppress(OSError), open(attempt / name, "rb") as f:
                        f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
                        if text in f.read():
                            return attempt / "output.log"
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not print {text!r}")


@pytest.fixture
def go() -> Iterator[Path]:
    """A file whose appearance lets the job end; made on the way out whatever happened, so a
    failed test leaves no job waiting (local jobs outlive the broker)."""
    folder = Path(tempfile.mkdtemp())
    os.chmod(folder, 0o755)  # the job's private user must see the file appear
    yield folder / "go"
    (folder / "go").touch()
    time.sleep(1)  # the job polls every 0.1 s
    shutil.rmtree(folder)


def test_output_past_the_cap_is_cut_the_job_runs_on_and_its_end_is_kept(
    capped: BrokerProcess, go: Path
) -> None:
    with grpc.insecure_channel(capped.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        spec = job_pb2.JobSpec(
            name="flood",
            command=[PY, "-c", SCRIPT, str(go)],
            runtime_estimate=duration_pb2.Duration(seconds=300),
        )
        job = stub.SubmitJob(pb.SubmitJobRequest(job=spec), metadata=auth("team-a")).job
        log = wait_until_printed(capped, job.id, b"THE-END\n")
        running = stub.GetJob(pb.GetJobRequest(id=job.id), metadata=auth("team-a")).job
        assert running.state == job_pb2.JOB_STATE_RUNNING, running  # past the cap, it runs on
        assert log.stat().st_size <= CAP
        head = run_szb(capped, TOKENS["team-a"], "logs", job.id)
        assert head.returncode == 0, head.stderr
        assert head.stdout.startswith("HEAD-MARK\nxxx")
        assert f"output beyond {CAP} bytes (max_output_bytes) is not kept while the job runs" in head.stdout
        follow = subprocess.Popen(
            [sys.executable, "-m", "broker.cli", "logs", job.id, "--follow"],
            cwd=ROOT,
            env={
                **os.environ,
                "SZB_SERVER": capped.address,
                "SZB_TOKEN": TOKENS["team-a"],
                "GRPC_VERBOSITY": "ERROR",
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        go.touch()
        final = wait_for(stub, job.id, lambda j: j.state in TERMINAL)
        assert final.state == job_pb2.JOB_STATE_SUCCEEDED and final.exit_code == 0, final
        assert final.log_tail.endswith("x\nTHE-END\nAFTER-GO\n")
        assert log.stat().st_size <= CAP
        assert not (log.parent / "output.tail").exists()
        whole = run_szb(capped, TOKENS["team-a"], "logs", job.id).stdout
        # The head as it was, a note of how much was cut, then the tail up to the last line.
        assert whole.startswith(head.stdout)
        cut = 8192 * 1024 + len("THE-END\nAFTER-GO\n") + len("HEAD-MARK\n") - (CAP - CAP // 4 - 512)
        kept_tail = CAP // 4
        assert f"[szb: {cut - kept_tail} bytes of output were cut here (max_output_bytes {CAP});" in whole
        assert whole.endswith("xxxx\nTHE-END\nAFTER-GO\n")
        assert len(whole.encode()) <= CAP
        # A reader following by byte offset saw the same bytes.
        out, err = follow.communicate(timeout=60)
        assert follow.returncode == 0, err
        assert out == whole


@pytest.mark.parametrize("value", [0, 4095, -1, "lots", "64 MB", True, 1.5, None])
def test_a_bad_max_output_bytes_disables_the_site_naming_the_key(tmp_path: Path, value: object) -> None:
    with pytest.raises(ConfigError, match="max_output_bytes"):
        LocalAdapter(SiteId("local"), {"data_dir": str(tmp_path / "data"), "max_output_bytes": value})


@pytest.mark.parametrize(
    ("value", "size"),
    [(None, 64 << 20), ("64MiB", 64 << 20), ("512 KiB", 512 << 10), (4096, 4096), ("1GiB", 1 << 30)],
)
def test_max_output_bytes_takes_bytes_or_binary_units(tmp_path: Path, value: object, size: int) -> None:
    config: dict[str, object] = {"data_dir": str(tmp_path / "data")}
    if value is not None:
        config["max_output_bytes"] = value
    assert LocalAdapter(SiteId("local"), config).max_output == size
