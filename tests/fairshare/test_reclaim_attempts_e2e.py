"""Preemptions are no failed attempts: a job reclaimed, then lost once, is requeued, not failed.

Found by a held-out review of issue 14: each reclaim used up one of the job's `max_attempts`
(and the youngest borrowed job, just requeued, is the one reclaimed next), so a job reclaimed
five times failed for good at its first real loss.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import JOB_PYTHON, running_broker, write_broker_folder
from tests.processes import runners_under

TOKENS = {"owner": "token-owner-0123456789", "borrower": "token-borrower-012345"}
POLICY = """\
version: 1
currency: CNY
accelerators: accelerators.yaml
regimes: regimes.yaml
sites:
  - id: local
    adapter: local
    country: CN
    residency: cn-mainland
    partitions:
      - {name: a800, accelerator: A800, count_per_node: 1, price_hour: 14.0}
tenants:
  - {id: owner, kind: institute, entity_country: CN, share: {quota: {local/a800: 1}}}
  - {id: borrower, kind: sme, entity_country: CN}
fair_share:
  reclaim: {grace: 1s, max_capacity_share: 1.0, window: 1h}
burst:
  retries: {max_attempts: 2}
compliance:
  residency:
    zones: {cn-mainland: {countries: [CN]}}
"""


def auth(tenant: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {TOKENS[tenant]}"),)


def spec(name: str, code: str) -> job_pb2.JobSpec:
    msg = job_pb2.JobSpec(name=name, command=[JOB_PYTHON, "-c", code],
                          runtime_estimate=duration_pb2.Duration(seconds=600))
    msg.resources.accelerators.count = 1
    msg.resources.accelerators.any_of.append("A800")
    return msg


def until(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.2)


def test_a_reclaimed_job_lost_once_is_requeued_not_failed(tmp_path: Path) -> None:
    with running_broker(write_broker_folder(tmp_path, POLICY, TOKENS)) as proc, \
            grpc.insecure_channel(proc.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)

        def state(job_id: str, tenant: str) -> int:
            return stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth(tenant)).job.state

        borrowed = stub.SubmitJob(pb.SubmitJobRequest(job=spec("borrowed", "import time; time.sleep(900)")),
                                  metadata=auth("borrower")).job.id
        until("the borrowed job runs", lambda: state(borrowed, "borrower") == job_pb2.JOB_STATE_RUNNING)
        own_spec = spec("own", "print('mine')")
        own = stub.SubmitJob(pb.SubmitJobRequest(job=own_spec), metadata=auth("owner")).job.id
        until("the owner's job ran", lambda: state(own, "owner") == job_pb2.JOB_STATE_SUCCEEDED)
        until("the borrowed job runs again", lambda: state(borrowed, "borrower") == job_pb2.JOB_STATE_RUNNING)
        runners = list(runners_under(tmp_path))
        assert runners, "no runner process found for the borrowed job"
        for pid in runners:  # a real loss: the runner dies without recording an exit code
            os.kill(pid, signal.SIGKILL)

        def get() -> job_pb2.Job:
            return stub.GetJob(pb.GetJobRequest(id=borrowed), metadata=auth("borrower")).job

        until("the loss is seen", lambda: get().state != job_pb2.JOB_STATE_RUNNING or "lost" in get().message)
        job = get()
        assert job.state != job_pb2.JOB_STATE_FAILED, job.message
        until("the borrowed job runs a third time", lambda: get().state == job_pb2.JOB_STATE_RUNNING)
        stub.CancelJob(pb.CancelJobRequest(id=borrowed), metadata=auth("borrower"))
        until("its process is gone", lambda: not runners_under(tmp_path))
