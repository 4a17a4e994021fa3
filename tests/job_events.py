"""Reading a live job's events in a test without racing the broker.

WatchJob sends a job's history and then follows it until it ends, so for a live job the tests
read "for a moment" (a 0.5-2 s deadline) and asserted on what had arrived. On a loaded CI box
(2 cores, pytest -n 2) the broker can be stalled for 10 s and more; the moment then ends before
an event the broker recorded long ago is sent, and a test that asserts the event is there fails
though the broker did nothing wrong. `events_until` reads until the events the test is about
have arrived, with a generous deadline, and returns what it read: the caller asserts the same
thing as before, on a read that no longer depends on how fast the broker answers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import grpc

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2

Events = list[job_pb2.JobEvent]


def events_until(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
    job_id: str,
    metadata: Sequence[tuple[str, str]],
    done: Callable[[Events], bool],
    timeout_s: float = 120.0,
) -> Events:
    """The job's events, read until `done(events)` holds, the job ends or `timeout_s` passes.

    It never raises for a missed deadline: the caller's assertion on the events says what was
    missing, with the events that did arrive.
    """
    out: Events = []
    stream = stub.WatchJob(pb.WatchJobRequest(id=job_id), metadata=metadata, timeout=timeout_s)
    try:
        for resp in stream:
            out.append(resp.event)
            if done(out):
                break
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
    finally:
        stream.cancel()  # a live job's stream would otherwise stay open until the deadline
    return out


def events_so_far(
    stub: broker_service_pb2_grpc.BrokerServiceStub,
    job_id: str,
    metadata: Sequence[tuple[str, str]],
    until: Callable[[Events], bool] | None = None,
) -> Events:
    """A live job's events until now (read until the stream idles 2 s: for checks that an event
    is absent); given `until`, read until those events have arrived (`events_until`)."""
    if until is not None:
        return events_until(stub, job_id, metadata, until)
    out: Events = []
    stream = stub.WatchJob(pb.WatchJobRequest(id=job_id), metadata=metadata, timeout=2)
    try:
        for resp in stream:
            out.append(resp.event)
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    return out


def has(kind: str, text: str = "") -> Callable[[Events], bool]:
    """`done` for `events_until`: an event of this kind (whose message contains `text`) arrived."""
    return lambda events: any(e.kind == kind and text in e.message for e in events)


def reached(state: job_pb2.JobState.ValueType) -> Callable[[Events], bool]:
    """`done` for `events_until`: the event that moved the job to `state` arrived."""
    return lambda events: any(e.state == state for e in events)
