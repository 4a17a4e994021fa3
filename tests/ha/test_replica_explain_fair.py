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
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import grpc
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2, placement_pb2
from tests.e2e.conftest import PY, auth
from tests.ha.conftest import Cluster


def gpus(name: str, count: int, seconds: float) -> job_pb2.JobSpec:
    spec = job_pb2.JobSpec(name=name, command=[PY, "-c", f"import time; time.sleep({seconds})"],
                           runtime_estimate=duration_pb2.Duration(seconds=3600),
                           max_wait=duration_pb2.Duration(seconds=7200))
    spec.resources.accelerators.count = count
    spec.resources.accelerators.any_of.append("A800")
    return spec


Stub = broker_service_pb2_grpc.BrokerServiceStub


@contextmanager
def through_replica(cluster: Cluster) -> Iterator[Stub]:
    """A stub on an API replica of a split cluster whose scheduler leads."""
    api = cluster.start("api")
    cluster.start("scheduler")
    cluster.leader()
    with grpc.insecure_channel(api.address) as channel:
        yield broker_service_pb2_grpc.BrokerServiceStub(channel)


def state(stub: Stub, job_id: str, tenant: str) -> job_pb2.Job:
    return stub.GetJob(pb.GetJobRequest(id=job_id), metadata=auth(tenant)).job


def submit(stub: Stub, started: list[tuple[str, str]], name: str, count: int, seconds: float,
           tenant: str) -> str:
    """A job of `count` A800s sleeping `seconds`, noted in `started` (to cancel at the end)."""
    job_id = stub.SubmitJob(pb.SubmitJobRequest(job=gpus(name, count, seconds)), metadata=auth(tenant)).job.id
    started.append((job_id, tenant))
    return str(job_id)


def hold_one(stub: Stub, started: list[tuple[str, str]]) -> tuple[str, str]:
    """(team-b's holding job, team-a's held job); `started` gets each job submitted, with its tenant."""
    ran = [submit(stub, started, f"r{i}", 1, 600, "team-a") for i in range(2)]
    deadline = time.monotonic() + 90
    while any(state(stub, r, "team-a").state != job_pb2.JOB_STATE_RUNNING for r in ran):
        assert time.monotonic() < deadline, "team-a's jobs never ran"
        time.sleep(0.2)
    big = submit(stub, started, "big", 4, 60, "team-b")
    while "waiting" not in state(stub, big, "team-b").message:  # decided: it holds the 2 free A800s
        assert time.monotonic() < deadline, "team-b's job was never decided"
        time.sleep(0.2)
    return big, submit(stub, started, "small", 1, 60, "team-a")


def said_held(stub: Stub, big: str, small: str, timeout: float) -> tuple[str, pb.ExplainPlacementResponse]:
    """The held job's message and live explanation, once they name the hold (or at `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        explained = stub.ExplainPlacement(pb.ExplainPlacementRequest(job_id=small), metadata=auth("team-a"))
        message = state(stub, small, "team-a").message
        first = explained.explanation.decision.reasons[0]
        if (HELD in message and HELD in first) or time.monotonic() > deadline:
            return message, explained
        time.sleep(0.5)


HELD = "kept for another tenant's job"
"""How a job held for another tenant's job names it: neither its id nor its tenant."""


def check_held(stub: Stub, big: str, small: str, timeout: float) -> None:
    message, explained = said_held(stub, big, small, timeout)
    held = f"held: the 2 free unit(s) at local/a800 are {HELD}, ahead in the fair-share order"
    assert message.startswith(held), message
    decision = explained.explanation.decision
    assert decision.action == placement_pb2.DECISION_ACTION_WAIT, list(decision.reasons)  # not "run"
    assert decision.reasons[0].startswith(held), list(decision.reasons)
    # team-b's job id and name are not team-a's to learn (a held reason named both).
    told = [message, *decision.reasons, explained.explanation.decision_json]
    assert not [t for t in told if big in t or "team-b" in t], told
    assert state(stub, small, "team-a").state == job_pb2.JOB_STATE_QUEUED


def cancel_all(stub: Stub, started: list[tuple[str, str]]) -> None:
    """The last submitted first: no waiting job starts on what the running ones free."""
    for job_id, tenant in reversed(started):
        stub.CancelJob(pb.CancelJobRequest(id=job_id), metadata=auth(tenant))


def wait_running(stub: Stub, job_id: str, tenant: str = "team-a", timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while state(stub, job_id, tenant).state != job_pb2.JOB_STATE_RUNNING:
        assert time.monotonic() < deadline, f"{tenant}'s job never ran"
        time.sleep(0.2)


def a_held_job_is_named(stub: Stub) -> None:
    """A job held for a bigger one ahead (`hold_one`) is said to be held (`check_held`)."""
    started: list[tuple[str, str]] = []
    try:
        big, small = hold_one(stub, started)
        check_held(stub, big, small, 30)
    finally:
        cancel_all(stub, started)


def share(reasons: list[str]) -> tuple[str, float]:
    """(place in tenant order, share ratio) from an explained decision's standing reason."""
    said = next((r for r in reasons if "in tenant order" in r), "")
    found = re.search(r"^(\d+\w\w) in tenant order.* at ([0-9.]+)× its share", said)
    assert found, reasons
    return found.group(1), float(found.group(2))


def test_explain_through_a_replica_stands_on_the_schedulers_fair_share_state(cluster: Cluster) -> None:
    with through_replica(cluster) as stub:
        ask = pb.SubmitJobRequest(job=gpus("all-four", 4, 600))
        holder = stub.SubmitJob(ask, metadata=auth("team-a")).job
        try:
            wait_running(stub, holder.id)
            # team-b waits behind nothing; team-a holds all four A800s. Ask until the replica's
            # snapshot (refreshed every few seconds) has seen the running job.
            deadline = time.monotonic() + 30
            while True:
                mine = stub.ExplainPlacement(pb.ExplainPlacementRequest(job=gpus("more", 1, 1)),
                                             metadata=auth("team-a")).explanation.decision
                busy = not any("capacity free" in r for r in mine.reasons)
                seen = busy and share(list(mine.reasons))[1] > 0
                if seen or time.monotonic() > deadline:  # (a snapshot taken as it started claims its
                    break  # GPUs for it, before the book holds it running)
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
    with through_replica(cluster) as stub:
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
    with through_replica(cluster) as stub:
        ask = pb.SubmitJobRequest(job=gpus("all-four", 4, 600))
        holder = stub.SubmitJob(ask, metadata=auth("team-a")).job
        try:
            wait_running(stub, holder.id)
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


def test_a_replica_explains_a_held_job_as_held(cluster: Cluster) -> None:
    """The replica kept no holds and its snapshot claimed nothing for the holder: a job held for
    a bigger one ahead was explained "run — on-prem capacity free", and stayed queued."""
    with through_replica(cluster) as stub:
        a_held_job_is_named(stub)


Read = Callable[[Stub, str, str], str]


def got(stub: Stub, job_id: str, tenant: str) -> str:
    return str(state(stub, job_id, tenant).message)


def listed(stub: Stub, job_id: str, tenant: str) -> str:
    queued = [job_pb2.JOB_STATE_QUEUED]
    page = stub.ListJobs(pb.ListJobsRequest(states=queued, page_size=100), metadata=auth(tenant))
    return str(next(j.message for j in page.jobs if j.id == job_id))


def overtaken(stub: Stub, started: list[tuple[str, str]], read: Read) -> tuple[str, str]:
    """A 1-GPU job of team-a waits behind team-a's 4-GPU job, then team-b's bigger job goes ahead
    of it in the fair order: its message (by `read`) when first decided, and once overtaken."""
    holder = submit(stub, started, "all-four", 4, 600, "team-a")
    wait_running(stub, holder)
    deadline = time.monotonic() + 90
    mine = submit(stub, started, "mine", 1, 60, "team-a")
    while "waiting" not in (first := read(stub, mine, "team-a")):
        assert time.monotonic() < deadline, "team-a's job was never decided"
        time.sleep(0.2)
    theirs = submit(stub, started, "theirs", 4, 60, "team-b")
    while "waiting" not in read(stub, theirs, "team-b"):
        assert time.monotonic() < deadline, "team-b's job was never decided"
        time.sleep(0.2)
    time.sleep(3)  # (past the replica's snapshot refresh: the next read decides the queue again)
    return first, read(stub, mine, "team-a")


def test_szb_get_through_a_replica_says_why_a_job_waits_as_of_now(cluster: Cluster) -> None:
    """The scheduler stores a waiting reason again only when its wording changes: a replica showed
    the stored one, whose projected wait was that of the job's first decision (60 min), after a
    bigger job of team-b had gone ahead of it in the fair order (120 min, as explain said)."""
    with through_replica(cluster) as stub:
        started: list[tuple[str, str]] = []
        try:
            first, now = overtaken(stub, started, got)
            said = stub.ExplainPlacement(pb.ExplainPlacementRequest(job_id=started[1][0]),
                                         metadata=auth("team-a")).explanation.decision
            assert "expected wait 60 min" in first, first
            assert "expected wait 120 min" in said.reasons[0], list(said.reasons)
            assert now.startswith(said.reasons[0]), (now, list(said.reasons))
        finally:
            cancel_all(stub, started)


def test_szb_list_through_a_replica_says_why_a_job_waits_as_of_now(cluster: Cluster) -> None:
    """`szb list` (ListJobs) through a replica showed each queued job's stored reason, decided
    again only by a GetJob or an explain: the 60-minute wait of its first decision after team-b's
    bigger job had gone ahead of it."""
    with through_replica(cluster) as stub:
        started: list[tuple[str, str]] = []
        try:
            first, now = overtaken(stub, started, listed)
            assert "expected wait 60 min" in first, first
            assert "expected wait 120 min" in now, now
        finally:
            cancel_all(stub, started)
