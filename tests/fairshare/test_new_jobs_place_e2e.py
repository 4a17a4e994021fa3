"""Jobs decided between full passes stand where they are in the fair order, and count only the work
ahead of them there. A real `szb serve`, the local executor, real processes, gRPC.

Review of #14: between two full passes (`requeue_scan_s`) each pass decides only the jobs just
submitted, placed against the last full queue alone. A waiter decided so had no place, so every
job counted all of them as ahead: a small tenant's job, 1st in the fair order, was told its
on-prem wait was hours (all of a flood's waiters ahead of it). And jobs of one tenant submitted a
moment apart each stood "1st in tenant order", none of them against the others.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2, placement_pb2
from tests.brokerproc import BrokerProcess, write_broker_folder
from tests.fairshare.test_fair_e2e import POLICY, SLOTS, TOKENS, auth, gpu_job

BATCHES = 3
PER_BATCH = 8
RUN_S = 600  # the flood's jobs run (and are estimated, `gpu_job`: 60 s) far beyond the test


@dataclass
class Scene:
    small: placement_pb2.ProjectedWait
    """The small tenant's job, submitted after the flood's batches."""
    deepest: placement_pb2.ProjectedWait
    """The flood's last queued job."""
    message: str
    """The small job's message (`szb get`)."""
    flood: list[str]
    """The messages of the flood's queued jobs, in submission order."""


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    # No full pass after the first: every job here is decided by a pass over new jobs only.
    config = write_broker_folder(tmp_path_factory.mktemp("new-jobs"), POLICY, TOKENS)
    config.write_text(config.read_text().replace("{poll_interval_s: 0.2}",
                                                 "{poll_interval_s: 0.2, requeue_scan_s: 3600}"))
    broker = BrokerProcess(config)
    broker.start()
    ids: list[tuple[str, str]] = []
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            get = lambda job_id, tenant: stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth(tenant)).job  # noqa: E731

            def submit(tenant: str, name: str) -> str:
                request = pb.SubmitJobRequest(job=gpu_job(name, RUN_S))
                job_id = stub.SubmitJob(request, metadata=auth(tenant)).job.id
                ids.append((job_id, tenant))
                return job_id

            running = [submit("flood", f"run{i}") for i in range(SLOTS)]
            until(lambda: get(running[-1], "flood").state == job_pb2.JOB_STATE_RUNNING, "the flood runs")
            flood = []
            for b in range(BATCHES):  # passes apart: each decides its batch alone
                flood += [submit("flood", f"q{b}-{i}") for i in range(PER_BATCH)]
                last = flood[-1]
                until(lambda last=last: "waiting" in get(last, "flood").message, "the batch decided")
            mine = submit("small", "mine")
            until(lambda: "waiting" in get(mine, "small").message, "the small job decided")
            return Scene(projection(stub, mine, "small"), projection(stub, flood[-1], "flood"),
                         get(mine, "small").message, [get(j, "flood").message for j in flood])
    finally:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            for job_id, tenant in ids:
                stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth(tenant))
        broker.stop()


def test_a_new_job_counts_only_the_waiters_ahead_of_it(scene: Scene) -> None:
    # The small tenant (at 0x its share) is 1st in the fair order: no waiter is ahead of it, and
    # it waits for the first flood job to end (60 s estimated), not for the flood's whole queue.
    # On main: all 24 flood waiters ahead of it, a wait of 6 flood runtimes.
    assert scene.small.queue_ahead_jobs == 0, scene.small
    assert scene.small.wait_seconds <= 60, scene.small
    # The flood's last job has every other flood waiter ahead of it, and the small job.
    assert scene.deepest.queue_ahead_jobs == BATCHES * PER_BATCH, scene.deepest


def test_new_jobs_say_where_they_stand_among_each_other(scene: Scene) -> None:
    # On main: no standing at all (the last full queue knew none of them); each batch's jobs
    # stood against that queue alone, so the first of every batch was "1st".
    assert "1st in tenant order" in scene.message, scene.message
    places = [tenant_place(m) for m in scene.flood]
    assert places == list(range(2, BATCHES * PER_BATCH + 2)), places  # (the small job is 1st)


def projection(
    stub: broker_service_pb2_grpc.BrokerServiceStub, job_id: str, tenant: str
) -> placement_pb2.ProjectedWait:
    got = stub.ExplainPlacement(pb.ExplainPlacementRequest(job_id=job_id), metadata=auth(tenant))
    return got.explanation.decision.projection


def tenant_place(message: str) -> int:
    found = re.search(r"(\d+)(st|nd|rd|th) in tenant order", message)
    assert found is not None, message
    return int(found.group(1))


def until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
