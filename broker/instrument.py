"""Measuring wrappers: every backend call and every RPC counted and timed in `BrokerMetrics`."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from adapters.base import Adapter, LogSource
from adapters.wrapper import AdapterWrapper, LogSourceWrapper
from broker.metrics import BrokerMetrics

T = TypeVar("T")


class MeasuredAdapter(AdapterWrapper):
    """An adapter whose calls are counted and timed per site; everything else passes through."""

    def __init__(self, inner: Adapter, metrics: BrokerMetrics) -> None:
        super().__init__(inner)
        self._metrics = metrics

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


class MeasuredLogSource(MeasuredAdapter, LogSourceWrapper):
    """A measured adapter whose backend also serves job output (`adapters.base.LogSource`)."""


def measured(adapter: Adapter, metrics: BrokerMetrics) -> MeasuredAdapter:
    """`adapter` with its calls measured; optional protocols it implements stay visible as such
    (checked on the class, so `isinstance(x, LogSource)` means what it says)."""
    if isinstance(adapter, LogSource):
        return MeasuredLogSource(adapter, metrics)
    return MeasuredAdapter(adapter, metrics)


def _code(context: grpc.aio.ServicerContext[Any, Any], outcome: str) -> str:
    """The call's status code name; `outcome` when the handler set none: OK, UNKNOWN (it raised)
    or CANCELLED (the client went away)."""
    code = context.code()
    if code is None:
        return outcome
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

        def done(context: grpc.aio.ServicerContext[Any, Any], started: float, outcome: str) -> None:
            m.rpc_seconds.labels(method).observe(time.perf_counter() - started)
            m.rpcs.labels(method, _code(context, outcome)).inc()

        if handler.unary_unary is not None and inspect.iscoroutinefunction(handler.unary_unary):
            inner: Any = handler.unary_unary  # a coroutine function under grpc.aio

            async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                started, outcome = time.perf_counter(), "OK"
                try:
                    return await inner(request, context)
                except asyncio.CancelledError:  # the client cancelled it (Ctrl-C, a closed pipe)
                    outcome = "CANCELLED"
                    raise
                except BaseException:
                    outcome = "UNKNOWN"
                    raise
                finally:
                    done(context, started, outcome)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
            stream_inner: Any = handler.unary_stream  # an async generator function

            async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                started, outcome = time.perf_counter(), "OK"
                try:
                    async for item in stream_inner(request, context):
                        yield item
                except (asyncio.CancelledError, GeneratorExit):  # the client left (GeneratorExit: at a yield)
                    outcome = "CANCELLED"
                    raise
                except BaseException:
                    outcome = "UNKNOWN"
                    raise
                finally:
                    done(context, started, outcome)

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
