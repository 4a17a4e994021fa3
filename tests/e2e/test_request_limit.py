"""The broker receives requests only up to what its policy can take, against a real `szb serve`.

A held-out review: 30 concurrent 25 MB SubmitJobs, each refused by the tenant's `max_spec_bytes`,
took the broker from 110 MB to 0.8-1.5 GB, because gRPC received and decoded them first (its limit
was 32 MiB). Now gRPC refuses a request over the policy's largest `max_spec_bytes` (or a batch's
8 MiB) plus slack unread, and large requests past twice that in flight are refused before they
are decoded; `bench/large_requests.py` has the memory figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import job_pb2
from broker.grpcserve import BATCH_BYTES, REQUEST_SLACK
from broker.request_bytes import LARGE_REQUEST_BYTES, RequestBytes
from broker.rpc_guard import DecodeGuard
from tests.brokerproc import running_broker, stub_for, szb, write_broker_folder
from tests.e2e.conftest import POLICY, TOKENS, auth

BIG = 12_000_000
"""A request over the default limit (8 MiB + slack) and under a 16 MiB `max_spec_bytes`."""
LARGE_SPECS = POLICY.replace(
    "  - {id: team-b, kind: institute, entity_country: CN}",
    "  - {id: team-b, kind: institute, entity_country: CN, limits: {max_spec_bytes: 16777216}}",
)


def spec(name: str, blob: int = 0) -> job_pb2.JobSpec:
    msg = job_pb2.JobSpec(name=name, command=["true"])
    msg.runtime_estimate.seconds = 60
    if blob:
        msg.env["BLOB"] = "x" * blob
    return msg


def test_a_request_over_the_policys_largest_is_refused_unread_and_names_the_limit(tmp_path: Path) -> None:
    assert LARGE_SPECS != POLICY
    limit = BATCH_BYTES + REQUEST_SLACK  # (every max_spec_bytes is the default 64 KiB)
    config = write_broker_folder(tmp_path, POLICY, TOKENS)
    with running_broker(config) as broker, stub_for(broker.address) as stub:
        kept = stub.SubmitJob(pb.SubmitJobRequest(job=spec("kept")), metadata=auth("team-a")).job
        with pytest.raises(grpc.RpcError) as refused:
            stub.SubmitJob(pb.SubmitJobRequest(job=spec("big", BIG)), metadata=auth("team-a"))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"Received message larger than max ({BIG + 36} vs. {limit})" in (refused.value.details() or "")

        # `szb` says what the numbers are and what to do.
        job = tmp_path / "big.yaml"
        job.write_text(f"name: big\ncommand: [\"true\"]\nruntime_estimate: 1m\nenv: {{BLOB: {'x' * BIG}}}\n")
        out = szb(broker, TOKENS["team-a"], "submit", str(job))
        assert out.returncode == 1, out.stdout + out.stderr
        assert f"the broker takes requests of at most {limit} bytes" in out.stderr, out.stderr
        assert "fewer jobs per call" in out.stderr

        # Normal submits are untouched: a batch of 2,000 jobs (about 0.1 MB), and what was stored is there.
        batch = pb.SubmitJobsRequest(requests=[pb.SubmitJobRequest(job=spec(f"j{i}")) for i in range(2000)])
        answer = stub.SubmitJobs(batch, metadata=auth("team-b"))
        assert len(answer.responses) == 2000 and all(r.created for r in answer.responses)
        assert stub.GetJob(pb.GetJobRequest(id=kept.id), metadata=auth("team-a")).job.spec.name == "kept"

        # A reload cannot widen gRPC's limit: the broker says a restart is needed.
        (tmp_path / "policy.yaml").write_text(LARGE_SPECS)
        assert broker.said(f"this broker receives at most {limit} until it is restarted", timeout=30)


def test_the_limit_follows_the_policys_largest_max_spec_bytes(tmp_path: Path) -> None:
    config = write_broker_folder(tmp_path, LARGE_SPECS, TOKENS)
    with running_broker(config) as broker, stub_for(broker.address) as stub:
        # team-b may send 16 MiB specs: its 12 MB one is received and taken.
        taken = stub.SubmitJob(pb.SubmitJobRequest(job=spec("big", BIG)), metadata=auth("team-b"))
        assert taken.created
        stub.CancelJob(pb.CancelJobRequest(id=taken.job.id), metadata=auth("team-b"))
        # team-a's limit is still 64 KiB: the same request is received, then refused by its quota.
        with pytest.raises(grpc.RpcError) as refused:
            stub.SubmitJob(pb.SubmitJobRequest(job=spec("big", BIG)), metadata=auth("team-a"))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_spec_bytes (65536) exceeded" in (refused.value.details() or "")


@contextlib.asynccontextmanager
async def guarded(
    budget: RequestBytes, handlers: dict[str, Any], **server_args: Any
) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to a grpc.aio server of `handlers` (service `t.T`) behind the broker's DecodeGuard."""
    server = grpc.aio.server(
        interceptors=[DecodeGuard(budget)], options=[("grpc.max_receive_message_length", 32 << 20)],
        **server_args,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(None)


def test_large_requests_past_the_in_flight_budget_are_refused_before_they_are_decoded() -> None:
    # The broker's own interceptor over a real channel, in front of a handler that holds a large
    # request until told (a broker's handlers answer too soon to hold one on purpose).
    budget = RequestBytes(3 * 1024 * 1024)
    decoded: list[int] = []

    async def main() -> None:
        release = asyncio.Event()
        entered = asyncio.Event()

        async def hold(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            if len(request) >= LARGE_REQUEST_BYTES and not entered.is_set():  # (the first large one)
                entered.set()
                await release.wait()
            return b"ok"

        def decode(raw: bytes) -> bytes:
            decoded.append(len(raw))
            return raw

        handler = grpc.unary_unary_rpc_method_handler(hold, request_deserializer=decode)
        async with guarded(budget, {"Hold": handler}) as channel:
            call = channel.unary_unary("/t.T/Hold")
            first = asyncio.ensure_future(call(b"a" * (2 << 20)))
            await entered.wait()
            with pytest.raises(grpc.aio.AioRpcError) as busy:
                await call(b"b" * (2 << 20))
            assert busy.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            said = busy.value.details() or ""
            assert "it handles at most 3145728 bytes of them at once" in said, said
            assert "this request (2097152 bytes) was not read: retry shortly" in said, said
            assert decoded == [2 << 20]  # the refused one was never decoded
            assert await call(b"small") == b"ok"  # small requests are not counted
            release.set()
            assert await first == b"ok"
            assert budget.held == 0
            assert await call(b"c" * (2 << 20)) == b"ok"  # taken again once the first ended

    asyncio.run(main())


def test_a_streamed_answers_large_request_is_gated_as_a_unary_ones() -> None:
    # WatchJob and StreamJobLogs answer with a stream: their request, up to the request limit,
    # was decoded whatever the budget held (30 callers of 10 MB watches: 600 MB decoded at once).
    budget = RequestBytes(3 * 1024 * 1024)
    decoded: list[int] = []

    async def main() -> None:
        release, entered = asyncio.Event(), asyncio.Event()

        async def hold(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            entered.set()
            await release.wait()
            return b"ok"

        async def watch(
            request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
        ) -> AsyncIterator[bytes]:
            yield b"event"

        def decode(raw: bytes) -> bytes:
            decoded.append(len(raw))
            return raw

        handlers = {
            "Hold": grpc.unary_unary_rpc_method_handler(hold, request_deserializer=decode),
            "Watch": grpc.unary_stream_rpc_method_handler(watch, request_deserializer=decode),
        }
        async with guarded(budget, handlers) as channel:
            watch_call = channel.unary_stream("/t.T/Watch")
            assert [m async for m in watch_call(b"w" * (2 << 20))] == [b"event"]
            assert budget.held == 0  # given back when the stream ended
            first = asyncio.ensure_future(channel.unary_unary("/t.T/Hold")(b"a" * (2 << 20)))
            await entered.wait()
            with pytest.raises(grpc.aio.AioRpcError) as busy:
                [m async for m in watch_call(b"b" * (2 << 20))]
            assert busy.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "this request (2097152 bytes) was not read" in (busy.value.details() or "")
            assert decoded == [2 << 20, 2 << 20]  # the refused watch was never decoded
            assert [m async for m in watch_call(b"small")] == [b"event"]  # small: not counted
            release.set()
            assert await first == b"ok"
            assert budget.held == 0

    asyncio.run(main())


def test_the_budget_is_counted_on_the_event_loop_even_for_a_plain_handler() -> None:
    # RequestBytes has no lock: grpc.aio runs plain (non-async) handlers in its thread pool, but
    # the guard wraps each in a coroutine, so the budget's take/give stay on the server's loop.
    budget = RequestBytes(3 * 1024 * 1024)
    threads: list[int] = []

    def plain(request: bytes, context: grpc.ServicerContext) -> bytes:
        threads.append(threading.get_ident())
        return b"ok"

    async def main() -> None:
        handler = grpc.unary_unary_rpc_method_handler(plain, request_deserializer=bytes)
        pool = futures.ThreadPoolExecutor(max_workers=2)
        async with guarded(budget, {"Plain": handler}, migration_thread_pool=pool) as channel:
            assert await channel.unary_unary("/t.T/Plain")(b"a" * (2 << 20)) == b"ok"

    asyncio.run(main())
    assert threads == [threading.get_ident()] and budget.held == 0  # (the loop ran in this thread)

