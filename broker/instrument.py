"""Measuring wrappers: every backend call and every RPC counted and timed in `BrokerMetrics`."""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import grpc

from adapters.base import Adapter, Capability, LogSource
from broker.metrics import BrokerMetrics
from broker.model import AttemptStatus, CapacitySnapshot, LaunchRequest, Offer, OwnedInstance, SiteId

T = TypeVar("T")


class MeasuredAdapter:
    """An adapter whose calls are counted and timed per site; everything else passes through."""

    def __init__(self, inner: Adapter, metrics: BrokerMetrics) -> None:
        self.inner = inner
        self.site: SiteId = inner.site
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:
        # Adapter-specific attributes (caches the tests read, ping) are the inner one's.
        return getattr(self.inner, name)

    def _call(self, call: str, fn: Callable[[], T]) -> T:
        m = self._metrics
        m.adapter_calls.labels(self.site, call).inc()
        started = time.perf_counter()
        try:
            return fn()
        except Exception as exc:
            m.adapter_errors.labels(self.site, call, type(exc).__name__).inc()
            raise
        finally:
            m.adapter_seconds.labels(self.site, call).observe(time.perf_counter() - started)

    def unsupported(self) -> Mapping[Capability, str]:
        return self.inner.unsupported()

    def offers(self, now: datetime) -> Sequence[Offer]:
        return self._call("offers", lambda: self.inner.offers(now))

    def capacity(self, now: datetime) -> CapacitySnapshot | None:
        return self._call("capacity", lambda: self.inner.capacity(now))

    def submit(self, request: LaunchRequest) -> str:
        return self._call("submit", lambda: self.inner.submit(request))

    def status(self, backend_id: str) -> AttemptStatus:
        return self._call("status", lambda: self.inner.status(backend_id))

    def cancel(self, backend_id: str, token: str) -> None:
        self._call("cancel", lambda: self.inner.cancel(backend_id, token))

    def list_owned(self) -> Sequence[OwnedInstance]:
        return self._call("list_owned", lambda: self.inner.list_owned())


class MeasuredLogSource(MeasuredAdapter):
    """A measured adapter whose backend also serves job output (`adapters.base.LogSource`)."""

    def read_log(self, backend_id: str, token: str, offset: int, limit: int) -> bytes:
        source = self.inner
        assert isinstance(source, LogSource)
        return self._call("read_log", lambda: source.read_log(backend_id, token, offset, limit))


def measured(adapter: Adapter, metrics: BrokerMetrics) -> MeasuredAdapter:
    """`adapter` with its calls measured; optional protocols it implements stay visible as such
    (checked on the class, so `isinstance(x, LogSource)` means what it says)."""
    if isinstance(adapter, LogSource):
        return MeasuredLogSource(adapter, metrics)
    return MeasuredAdapter(adapter, metrics)


def _code(context: grpc.aio.ServicerContext[Any, Any], failed: bool) -> str:
    code = context.code()
    if code is None:
        return "UNKNOWN" if failed else "OK"
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    try:
        return grpc.StatusCode(code).name
    except ValueError:
        for status in grpc.StatusCode:
            if status.value[0] == code:
                return str(status.name)
    return str(code)


class RpcMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts every RPC by method and status code and times it (streams: until they end)."""

    def __init__(self, metrics: BrokerMetrics) -> None:
        self.metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        m = self.metrics

        def done(context: grpc.aio.ServicerContext[Any, Any], started: float, failed: bool) -> None:
            m.rpc_seconds.labels(method).observe(time.perf_counter() - started)
            m.rpcs.labels(method, _code(context, failed)).inc()

        if handler.unary_unary is not None and inspect.iscoroutinefunction(handler.unary_unary):
            inner: Any = handler.unary_unary  # a coroutine function under grpc.aio

            async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                started, failed = time.perf_counter(), False
                try:
                    return await inner(request, context)
                except BaseException:
                    failed = True
                    raise
                finally:
                    done(context, started, failed)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
            stream_inner: Any = handler.unary_stream  # an async generator function

            async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                started, failed = time.perf_counter(), False
                try:
                    async for item in stream_inner(request, context):
                        yield item
                except BaseException:
                    failed = True
                    raise
                finally:
                    done(context, started, failed)

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
