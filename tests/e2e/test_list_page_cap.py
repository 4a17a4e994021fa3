"""`szb list --page-size` past the broker's cap of a page says so, as `szb audit --limit` does."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.jobview import MAX_PAGE_SIZE
from tests.brokerproc import running_broker, szb
from tests.e2e.conftest import PY, TOKENS, auth, write_broker_config
from tests.e2e.test_jobs_api import spec, submit, wait_for


def _queued(n: int, batch: int) -> pb.SubmitJobsRequest:
    """`n` jobs each wanting every A800, so they stay queued behind the one that holds them."""
    return pb.SubmitJobsRequest(requests=[
        pb.SubmitJobRequest(job=job_pb2.JobSpec(
            name=f"q-{batch}-{i}", command=["true"], runtime_estimate=duration_pb2.Duration(seconds=60),
            resources=job_pb2.Resources(accelerators=job_pb2.AcceleratorRequest(count=4, any_of=["A800"])),
            labels={"bulk": "yes"},
        ))
        for i in range(n)
    ])


def test_a_page_size_past_the_brokers_cap_says_the_page_was_cut(tmp_path: Path) -> None:
    # `--page-size 5000` printed 1,000 jobs and a "more:" line, as if 1,000 were what was asked.
    with running_broker(write_broker_config(tmp_path)) as broker:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            hog = submit(stub, spec("hog", [PY, "-c", "import time; time.sleep(600)"], gpus=4)).job
            wait_for(stub, hog.id, {job_pb2.JOB_STATE_RUNNING})
            for batch, n in enumerate((500, 500, 1)):
                stub.SubmitJobs(_queued(n, batch), metadata=auth("team-a"), timeout=60)
        try:
            asked = ("list", "--label", "bulk=yes", "-o", "json")
            cut = szb(broker, TOKENS["team-a"], *asked, "--page-size", "5000")
            assert cut.returncode == 0, cut.stderr
            page = json.loads(cut.stdout)
            assert len(page["jobs"]) == MAX_PAGE_SIZE and page["next_page_token"], cut.stdout[-300:]
            said = f"szb: only {MAX_PAGE_SIZE} jobs are shown: the broker answers at most {MAX_PAGE_SIZE} a"
            assert said in cut.stderr and "not --page-size 5000" in cut.stderr, cut.stderr
            assert f"--page-token {page['next_page_token']}" in cut.stderr, cut.stderr
            # Within the cap, or following every page, nothing was cut by it: nothing is said.
            for more in (("--page-size", "1000"), ("--page-size", "5000", "--all")):
                plain = szb(broker, TOKENS["team-a"], *asked, *more)
                assert plain.returncode == 0 and "szb: only" not in plain.stderr, plain.stderr
            assert len(json.loads(plain.stdout)["jobs"]) == 2 * 500 + 1
        finally:
            with grpc.insecure_channel(broker.address) as channel:
                stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
                stub.CancelJob(pb.CancelJobRequest(id=hog.id), metadata=auth("team-a"))
