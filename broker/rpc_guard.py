"""Undecodable request bytes get INVALID_ARGUMENT, with a rate-limited warning, not a traceback.

grpc.aio deserializes a request before the servicer runs; when the deserializer raises, the
server logs the whole traceback at ERROR and answers UNKNOWN. This interceptor wraps each
unary-request handler's deserializer so it returns a marker instead of raising, and the
handler answers the marker with a `google.rpc.BadRequest` through the one error helper.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.descriptor import Descriptor

from broker.request_bytes import LARGE_REQUEST_BYTES, RequestBytes
from broker.server import abort_with, bad_request
from broker.wire_text import non_utf8_field

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler


class _Undecodable:
    """What the guarded deserializer returns for bytes that are not the method's message."""

    __slots__ = ("field", "reason")

    def __init__(self, reason: str, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        """The field holding text that is not UTF-8, when that is why."""


class _Large:
    """A large request, not decoded yet: it is counted against the in-flight budget first."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw


class RateLimitedWarning:
    """Logs at most one warning per `interval_s`, saying how many were held back meanwhile."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0) -> None:
        self._log = logger
        self._interval = interval_s
        self._next = 0.0
        self._held = 0
        self._lock = threading.Lock()

    def warn(self, message: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            if now < self._next:
                self._held += 1
                return
            held, self._held, self._next = self._held, 0, now + self._interval
        suffix = f" ({held} more since the last warning)" if held else ""
        self._log.warning(message + suffix, *args)


def _guard(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    message = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)

    def deserialize(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception as exc:  # DecodeError, or anything a hostile payload makes it raise
            field = non_utf8_field(raw, message) if isinstance(message, Descriptor) else None
            return _Undecodable(type(exc).__name__, field)

    return deserialize


def _deferred(decode: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """`decode`, except that a large request is left whole (a `_Large`) for the handler."""
    if decode is None:
        return None
    return lambda raw: _Large(raw) if len(raw) >= LARGE_REQUEST_BYTES else decode(raw)


class DecodeGuard(grpc.aio.ServerInterceptor):
    """Server interceptor: bad request bytes become INVALID_ARGUMENT on every RPC (request streams too)."""

    def __init__(self, in_flight: RequestBytes | None = None) -> None:
        self._wrapped: dict[str, Handler] = {}
        self.warning = RateLimitedWarning(log)
        self.in_flight = in_flight
        self.busy_warning = RateLimitedWarning(log)
        """Large requests (a unary call's, a streamed answer's) decoded and handled at once (all on
        the server's event loop)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method: str = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        wrapped = self._wrap(method, handler)
        if wrapped is not handler:
            self._wrapped[method] = wrapped
        return wrapped

    def _reject(self, method: str, request: _Undecodable) -> Exception:
        self.warning.warn("undecodable request to %s (%s): answered INVALID_ARGUMENT", method, request.reason)
        if request.field is not None:
            return bad_request(request.field, "must be valid UTF-8 text")
        return bad_request("", f"the request is not a valid message for {method} ({request.reason})")

    def _wrap(self, method: str, handler: Handler) -> Handler:
        deserializer = _guard(handler.request_deserializer)
        # Plain functions too: the health service's List is one (it answered UNKNOWN, with a traceback).
        if handler.unary_unary is not None:
            inner: Any = handler.unary_unary
            gated = self.in_flight is not None and deserializer is not None

            async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                held = 0
                try:
                    request, held = await self._decode_large(request, deserializer, context)
                    if isinstance(request, _Undecodable):
                        await abort_with(context, self._reject(method, request))
                    answer = inner(request, context)
                    return await answer if inspect.isawaitable(answer) else answer
                except NotImplementedError:  # (a generated base class: grpc logged a traceback each time)
                    await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented here")
                finally:
                    self._give(held)

            return grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=_deferred(deserializer) if gated else deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return self._wrap_stream(method, handler, deserializer)
        if handler.stream_stream is not None and inspect.isasyncgenfunction(handler.stream_stream):
            return self._wrap_bidi(method, handler, deserializer)
        return handler

    def _wrap_stream(
        self, method: str, handler: Handler, deserializer: Callable[[bytes], Any] | None
    ) -> Handler:
        """A streamed answer's handler; its request is gated as a unary one's (a 10 MB WatchJob
        decodes as much)."""
        stream_decode = _deferred(deserializer) if self.in_flight is not None else deserializer
        if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
            inner_stream = handler.unary_stream

            async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                held = 0
                try:
                    request, held = await self._decode_large(request, deserializer, context)
                    if isinstance(request, _Undecodable):
                        await abort_with(context, self._reject(method, request))
                    async for item in inner_stream(request, context):  # type: ignore[arg-type]
                        yield item
                finally:
                    self._give(held)

            return grpc.unary_stream_rpc_method_handler(
                stream, request_deserializer=stream_decode, response_serializer=handler.response_serializer
            )
        if handler.unary_stream is not None and inspect.iscoroutinefunction(handler.unary_stream):
            writer = handler.unary_stream  # a stream sent with context.write (the health service's Watch)

            async def written(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
                held = 0
                try:
                    request, held = await self._decode_large(request, deserializer, context)
                    if isinstance(request, _Undecodable):
                        await abort_with(context, self._reject(method, request))
                    await writer(request, context)  # type: ignore[arg-type]
                finally:
                    self._give(held)

            return grpc.unary_stream_rpc_method_handler(
                written, request_deserializer=stream_decode, response_serializer=handler.response_serializer
            )
        return handler

    async def _decode_large(
        self,
        request: Any,
        decode: Callable[[bytes], Any] | None,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> tuple[Any, int]:
        """`request` decoded, with the bytes it holds of the in-flight budget (0: not large, so
        decoded already). A large one is decoded once the budget takes it; if not,
        RESOURCE_EXHAUSTED, unread."""
        if not isinstance(request, _Large):
            return request, 0
        assert self.in_flight is not None and decode is not None
        raw, request.raw = request.raw, b""
        if not self.in_flight.take(len(raw)):
            why = self.in_flight.refusal(len(raw))
            self.busy_warning.warn("a large request was answered RESOURCE_EXHAUSTED: %s", why)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, why)
        # Counted in: the caller's `finally` gives it back.
        return decode(raw), len(raw)

    def _give(self, held: int) -> None:
        if held and self.in_flight is not None:
            self.in_flight.give(held)

    def _wrap_bidi(
        self, method: str, handler: Handler, deserializer: Callable[[bytes], Any] | None
    ) -> Handler:
        """A request stream (server reflection's) whose every message is checked as it is read."""
        inner = handler.stream_stream

        async def bidi(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            async def checked() -> AsyncIterator[Any]:
                async for request in requests:
                    if isinstance(request, _Undecodable):
                        await abort_with(context, self._reject(method, request))
                    yield request

            async for item in inner(checked(), context):  # type: ignore[misc, arg-type, union-attr]
                yield item

        return grpc.stream_stream_rpc_method_handler(
            bidi, request_deserializer=deserializer, response_serializer=handler.response_serializer
        )
