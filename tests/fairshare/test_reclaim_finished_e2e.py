"""Reclaim never preempts work that has already finished: a borrower's job that wrote its exit code
before the broker read it (the broker reads results every 30 s here) keeps its result and is not run
again when the owner's job arrives (held-out review: it was preempted, requeued and ran twice)."""

from __future__ import annotations

import time
from pathlib import Path

import grpc

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import running_broker, write_broker_folder
from tests.fairshare.test_reclaim_e2e import POLICY, TOKENS, auth, job, until

ONE_GPU = POLICY.replace("count_per_node: 4", "count_per_node: 1").replace("local/a800: 2", "local/a800: 1")


def test_a_borrowed_job_that_finished_unread_is_not_preempted_or_run_again(tmp_path: Path) -> None:
    config = write_broker_folder(tmp_path / "b", ONE_GPU, TOKENS)
    config.write_text(config.read_text().replace("poll_interval_s: 0.2", "poll_interval_s: 30"))
    with running_broker(config) as broker, grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        submit = pb.SubmitJobRequest(job=job("quick", "print('done')"))
        quick = stub.SubmitJob(submit, metadata=auth("borrower")).job
        data = config.parent / "data" / "local"
        until(lambda: list(data.glob(f"{quick.id}-a*/exit_code")), "the borrower's job never ended")
        got = stub.GetJob(pb.GetJobRequest(id=quick.id), metadata=auth("borrower")).job
        live = (job_pb2.JOB_STATE_PROVISIONING, job_pb2.JOB_STATE_RUNNING)
        assert got.state in live  # ended, not read yet: its unit looks busy
        mine = pb.SubmitJobRequest(job=job("mine", "print(1)"))
        owner = stub.SubmitJob(mine, metadata=auth("owner"))

        def ended() -> bool:
            got = stub.GetJob(pb.GetJobRequest(id=quick.id), metadata=auth("borrower")).job
            return got.state not in live

        until(ended, "the borrower's job never ended in the store", timeout=90)
        time.sleep(1.0)  # a requeued job would be decided and started again by now
        got = stub.GetJob(pb.GetJobRequest(id=quick.id), metadata=auth("borrower")).job
        assert got.state == job_pb2.JOB_STATE_SUCCEEDED, got
        assert len(list(data.glob(f"{quick.id}-a*"))) == 1  # one attempt: it never ran again
        assert owner.job.id
