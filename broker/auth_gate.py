"""A broker call with a missing or unknown bearer token is refused before its request is read.

The servicer authenticates each call, but grpc.aio decodes the request first: a caller with
no token could make the broker parse messages of up to 32 MiB each. This interceptor looks at
the call's metadata alone and, for a token the tokens file does not hold, answers
UNAUTHENTICATED (the servicer's words) with a handler that never decodes the bytes. Calls it
cannot judge from metadata (a client certificate, two headers) go on to the servicer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from broker.auth import AuthError, TokenAuthority
from broker.rpc_errors import abort_with

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler


def _unread(raw: bytes) -> None:
    """The request, never decoded."""


class AuthGate(grpc.aio.ServerInterceptor):
    """Refuses unauthenticated calls to `service` (a full service name) before decoding them."""

    def __init__(self, auth: TokenAuthority, service: str) -> None:
        self.auth = auth
        self.prefix = f"/{service}/"
        self.enabled = False
        """Set once the service is served here (a role that refuses it answers every caller)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or not self.enabled or self.auth.dev_mode:
            return handler
        if not handler_call_details.method.startswith(self.prefix):
            return handler
        why = self.refusal(handler_call_details.invocation_metadata or ())
        return handler if why is None else _refusing(handler, why)

    def refusal(self, metadata: Sequence[tuple[str, Any]]) -> str | None:
        """Why the metadata alone makes the call unauthenticated (None: the servicer decides)."""
        headers = [v for k, v in metadata if k == "authorization"]
        if len(headers) > 1 or (not headers and self.auth.uses_certificates):
            return None
        try:
            self.auth.principal_for({"authorization": headers[0]} if headers else {})
        except AuthError as exc:
            return str(exc)
        return None


def _refusing(handler: Handler, why: str) -> Handler:
    """A handler of `handler`'s kind that answers UNAUTHENTICATED without reading the request."""
    if handler.unary_stream is not None:

        async def stream(request: None, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            await abort_with(context, AuthError(why))
            yield  # (an async generator, as the method's own handler is)

        return grpc.unary_stream_rpc_method_handler(
            stream, request_deserializer=_unread, response_serializer=handler.response_serializer
        )

    async def unary(request: None, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await abort_with(context, AuthError(why))

    return grpc.unary_unary_rpc_method_handler(
        unary, request_deserializer=_unread, response_serializer=handler.response_serializer
    )
