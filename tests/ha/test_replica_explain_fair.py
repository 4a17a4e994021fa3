"""Live explain through an API replica stands a job where the scheduler would (issue 13's split).

The replica decides explain on its own planner. Its fair-share state was never fed: no live
attempts, no usage, no queue, so every tenant stood "1st in tenant order ... at 0.0× its share"
there, and a tenant holding the whole partition was explained as if it held nothing. It now
follows the store (live attempts, the usage the scheduler saved, the queue) when it refreshes
its snapshot.
"""

from __future__ import annotations

import re
import time

import grpc
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from tests.e2e.conftest import PY, auth
from tests.ha.conftest import Cluster


def gpus(name: str, count: int, seconds: float) -> job_pb2.JobSpec:
    spec = job_pb2.JobSpec(name=name, command=[PY, "-c", f"import time; time.sleep({seconds})"],
                           runtime_estimate=duration_pb2.Duration(seconds=3600),
                           max_wait=duration_pb2.Duration(seconds=7200))
    spec.resources.accelerators.count = count
    spec.resources.accelerators.any_of.append("A800")
    return spec


def share(reasons: list[str]) -> tuple[str, float]:
    """(place in tenant order, share ratio) from an explained decision's standing reason."""
    said = next((r for r in reasons if "in tenant order" in r), "")
    found = re.search(r"^(\d+\w\w) in tenant order.* at ([0-9.]+)× its share", said)
    assert found, reasons
    return found.group(1), float(found.group(2))


def test_explain_through_a_replica_stands_on_the_schedulers_fair_share_state(cluster: Cluster) -> None:
    api = cluster.start("api")
    cluster.start("scheduler")
    cluster.leader()
    with grpc.insecure_channel(api.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        ask = pb.SubmitJobRequest(job=gpus("all-four", 4, 600))
        holder = stub.SubmitJob(ask, metadata=auth("team-a")).job
        try:
            deadline = time.monotonic() + 90
            while stub.GetJob(pb.GetJobRequest(id=holder.id), metadata=auth("team-a")).job.state != (
                job_pb2.JOB_STATE_RUNNING
            ):
                assert time.monotonic() < deadline, "team-a's job never ran"
                time.sleep(0.2)
            # team-b waits behind nothing; team-a holds all four A800s. Ask until the replica's
            # snapshot (refreshed every few seconds) has seen the running job.
            deadline = time.monotonic() + 30
            while True:
                mine = stub.ExplainPlacement(pb.ExplainPlacementRequest(job=gpus("more", 1, 1)),
                                             metadata=auth("team-a")).explanation.decision
                if not any("capacity free" in r for r in mine.reasons) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            theirs = stub.ExplainPlacement(pb.ExplainPlacementRequest(job=gpus("more", 1, 1)),
                                           metadata=auth("team-b")).explanation.decision
            assert not any("capacity free" in r for r in mine.reasons), list(mine.reasons)
            assert share(list(mine.reasons))[1] > 0, list(mine.reasons)  # it holds all four
            assert share(list(theirs.reasons))[1] == 0.0, list(theirs.reasons)
        finally:
            stub.CancelJob(pb.CancelJobRequest(id=holder.id), metadata=auth("team-a"))


def test_a_replica_reads_a_deep_queue_as_the_schedulers_passes_do(cluster: Cluster) -> None:
    """Past `dispatch.queue_window` the scheduler decides each tenant's first jobs; the replica
    read the first 10,000 queued jobs by age instead, and never said a job was further back."""
    cluster.config.write_text(cluster.config.read_text().replace(
        "dispatch: {poll_interval_s: 0.2}", "dispatch: {poll_interval_s: 0.2, queue_window: 10}"))
    api = cluster.start("api")
    cluster.start("scheduler")
    cluster.leader()
    with grpc.insecure_channel(api.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        ask = pb.SubmitJobRequest(job=gpus("all-four", 4, 600))
        holder = stub.SubmitJob(ask, metadata=auth("team-a")).job
        reqs = [pb.SubmitJobRequest(job=gpus(f"w{i}", 1, 1)) for i in range(12)]
        waiting = [r.job.id for r in stub.SubmitJobs(pb.SubmitJobsRequest(requests=reqs),
                                                     metadata=auth("team-a")).responses]
        stub.SubmitJob(pb.SubmitJobRequest(job=gpus("theirs", 1, 1)), metadata=auth("team-b"))
        try:
            deadline = time.monotonic() + 60
            while True:  # each explain refreshes the replica's view once its snapshot is old enough
                more = pb.ExplainPlacementRequest(job=gpus("more", 1, 1))
                stub.ExplainPlacement(more, metadata=auth("team-a"))
                deep = stub.GetJob(pb.GetJobRequest(id=waiting[-1]), metadata=auth("team-a")).job
                if "further back" in deep.message or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            # 13 queued jobs of two tenants over a window of 10: each tenant's first 5.
            assert deep.message.endswith("with more than 10 jobs queued, each pass decides the first (by "
                                         "priority, then age) of each tenant's jobs asking the same "
                                         "hardware, and this one is further back"), deep.message
            head = stub.GetJob(pb.GetJobRequest(id=waiting[0]), metadata=auth("team-a")).job
            assert "in tenant order" in head.message and "further back" not in head.message, head.message
        finally:
            stub.CancelJob(pb.CancelJobRequest(id=holder.id), metadata=auth("team-a"))


def test_a_replica_counts_the_jobs_queued_ahead_of_a_queued_job(cluster: Cluster) -> None:
    """A replica decided nothing, so its projected waits had no line: every queued job was
    explained with 0 waiting in the broker ahead of it, the 3rd in tenant order as the 1st."""
    api = cluster.start("api")
    cluster.start("scheduler")
    cluster.leader()
    with grpc.insecure_channel(api.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        ask = pb.SubmitJobRequest(job=gpus("all-four", 4, 600))
        holder = stub.SubmitJob(ask, metadata=auth("team-a")).job
        try:
            deadline = time.monotonic() + 90
            while stub.GetJob(pb.GetJobRequest(id=holder.id), metadata=auth("team-a")).job.state != (
                job_pb2.JOB_STATE_RUNNING
            ):
                assert time.monotonic() < deadline, "team-a's job never ran"
                time.sleep(0.2)
            reqs = [pb.SubmitJobRequest(job=gpus(f"w{i}", 1, 1)) for i in range(3)]
            waiting = [r.job.id for r in stub.SubmitJobs(pb.SubmitJobsRequest(requests=reqs),
                                                         metadata=auth("team-a")).responses]
            deadline = time.monotonic() + 30
            while True:  # until the replica's snapshot (refreshed every few seconds) has the queue
                said = stub.ExplainPlacement(pb.ExplainPlacementRequest(job_id=waiting[-1]),
                                             metadata=auth("team-a")).explanation.decision
                if said.projection.queue_ahead_jobs == 2 or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert said.HasField("projection"), list(said.reasons)
            assert said.projection.queue_ahead_jobs == 2, (said.projection, list(said.reasons))
            assert share(list(said.reasons))[0] == "3rd", list(said.reasons)
        finally:
            stub.CancelJob(pb.CancelJobRequest(id=holder.id), metadata=auth("team-a"))
