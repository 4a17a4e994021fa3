"""A cancel is answered once it is recorded, not after the job's whole grace period.

Found by a held-out review of issue 2: a job that traps SIGTERM (as a checkpointing training
job does) held `CancelJob` for the local executor's whole grace before SIGKILL; `szb cancel`
gave up after 30 s with DEADLINE_EXCEEDED and exit 1, though the job was CANCELLED. The stop
goes on after the answer: the process still gets its grace, then SIGKILL, and its attempt is
closed then. A real `szb serve` over gRPC.
"""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import grpc

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import BrokerProcess
from tests.e2e.conftest import PY, auth, write_broker_config
from tests.e2e.test_jobs_api import _pids_with, spec, submit, wait_for
from tests.processes import Held

GRACE_S = 12.0


def test_a_cancel_answers_before_a_job_that_traps_sigterm_is_killed(tmp_path: Path) -> None:
    broker = BrokerProcess(write_broker_config(tmp_path, cancel_grace_s=GRACE_S))
    broker.start()
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            marker = f"trapper-{uuid.uuid4().hex}"
            code = (
                "import signal, time; signal.signal(signal.SIGTERM, lambda *_: print('saving', flush=True))\n"
                f"print('started', flush=True)\nwhile True: time.sleep(1)  # {marker}"
            )
            job = submit(stub, spec("trapper", [PY, "-c", code])).job
            wait_for(stub, job.id, {job_pb2.JOB_STATE_RUNNING})
            deadline = time.monotonic() + 10
            while not (pids := _pids_with(marker)) and time.monotonic() < deadline:
                time.sleep(0.05)
            (pid,) = pids
            process = Held(pid)
            # Its command line shows before Python has run a line: a cancel before the trap is set
            # kills it at once, as happened on a loaded machine.
            deadline = time.monotonic() + 30
            while not _traps_sigterm(pid):
                assert time.monotonic() < deadline, "the job never set its SIGTERM trap"
                time.sleep(0.05)
            # Half the grace period: the answer must not wait for SIGKILL.
            cancelled = stub.CancelJob(
                pb.CancelJobRequest(id=job.id), metadata=auth("team-a"), timeout=GRACE_S / 2
            ).job
            assert cancelled.state == job_pb2.JOB_STATE_CANCELLED
            assert not process.wait_gone(1), "the job lost its grace period"
            assert process.wait_gone(GRACE_S * 3), "the job's process survived its cancellation"
            # The stop, finished after the answer, closes the attempt and keeps the output.
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                got = stub.GetJob(pb.GetJobRequest(id=job.id), metadata=auth("team-a")).job
                if "saving" in got.log_tail:
                    break
                time.sleep(0.2)
            assert got.state == job_pb2.JOB_STATE_CANCELLED
            assert "saving" in got.log_tail, got.log_tail
    finally:
        broker.stop()


def _traps_sigterm(pid: int) -> bool:
    """Whether the process has a SIGTERM handler (`SigCgt` in /proc/PID/status is a signal mask)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False
