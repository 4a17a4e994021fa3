"""Restarting (or killing) the broker loses no job."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import BrokerProcess
from tests.e2e.conftest import PY, auth, write_broker_config
from tests.e2e.test_jobs_api import TERMINAL, spec, submit, wait_for


def test_kill_mid_run_loses_no_job(tmp_path: Path) -> None:
    broker = BrokerProcess(write_broker_config(tmp_path))
    broker.start()
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            code = "import time; time.sleep(3); print('survived the broker')"
            running = submit(stub, spec("long", [PY, "-c", code])).job
            wait_for(stub, running.id, {job_pb2.JOB_STATE_RUNNING})
            queued = [submit(stub, spec(f"q-{i}", [PY, "-c", "pass"], gpus=4)).job for i in range(3)]
        broker.kill()
        broker.restart()
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            final = wait_for(stub, running.id, TERMINAL, timeout=60)
            assert final.state == job_pb2.JOB_STATE_SUCCEEDED, final.message
            assert "survived the broker" in final.log_tail
            for job in queued:
                assert wait_for(stub, job.id, TERMINAL, timeout=60).state == job_pb2.JOB_STATE_SUCCEEDED
    finally:
        broker.stop()


def test_ten_thousand_queued_jobs_survive_a_restart(tmp_path: Path) -> None:
    broker = BrokerProcess(write_broker_config(tmp_path))
    broker.start()
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            # One job holds every A800, so the 10k below (each wanting all four) stay queued.
            hog = submit(stub, spec("hog", [PY, "-c", "import time; time.sleep(600)"], gpus=4)).job
            wait_for(stub, hog.id, {job_pb2.JOB_STATE_RUNNING})
            ids: list[str] = []
            for batch in range(20):
                reqs = [
                    pb.SubmitJobRequest(
                        job=job_pb2.JobSpec(
                            name=f"q-{batch}-{i}",
                            command=["true"],
                            runtime_estimate=duration_pb2.Duration(seconds=60),
                            resources=job_pb2.Resources(
                                accelerators=job_pb2.AcceleratorRequest(count=4, any_of=["A800"])
                            ),
                            labels={"bulk": "yes"},
                        ),
                        client_id=f"bulk-{batch}-{i}",
                    )
                    for i in range(500)
                ]
                resp = stub.SubmitJobs(
                    pb.SubmitJobsRequest(requests=reqs), metadata=auth("team-a"), timeout=60
                )
                ids.extend(r.job.id for r in resp.responses)
        assert len(set(ids)) == 10_000
        broker.kill()
        broker.restart()
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            seen: list[str] = []
            token = ""
            while True:
                page = stub.ListJobs(
                    pb.ListJobsRequest(labels={"bulk": "yes"}, page_size=1000, page_token=token),
                    metadata=auth("team-a"),
                    timeout=60,
                )
                seen.extend(j.id for j in page.jobs if j.state == job_pb2.JOB_STATE_QUEUED)
                token = page.next_page_token
                if not token:
                    break
            assert seen == ids
            # Resubmitting with the same client ids after the restart creates nothing new.
            again = stub.SubmitJob(
                pb.SubmitJobRequest(job=spec("q-0-0", ["true"], gpus=4), client_id="bulk-0-0"),
                metadata=auth("team-a"),
            )
            assert not again.created and again.job.id == ids[0]
            stub.CancelJob(pb.CancelJobRequest(id=hog.id), metadata=auth("team-a"))
            time.sleep(0.1)
    finally:
        broker.stop()
