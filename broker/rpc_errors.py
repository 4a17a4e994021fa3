"""Typed errors to gRPC statuses with rich details: the one place that maps them."""

from __future__ import annotations

import logging
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from broker.auth import AuthError
from broker.joblogs import OutputElsewhereError, OutputRemovedError
from broker.quota import QuotaExceededError
from broker.service import (
    AgentAuthError,
    AgentReportError,
    JobNotQueuedError,
    PermissionDeniedError,
)
from broker.store import JobNotFoundError, StoreError, StoreUnavailable
from broker.submit import NotPlaceableError
from broker.validation import BadRequestError, FieldViolation

log = logging.getLogger(__name__)

DOMAIN = "shangzhuang.broker.v1"


_BadRequest = BadRequestError

MAX_VIOLATIONS = 20
"""Violations listed in one answer. The status travels in trailing metadata, which clients cut
at 16 KiB: a batch of 2,000 bad jobs, or an error quoting a 40 KB env name, reached them as
RESOURCE_EXHAUSTED "Stream removed" naming nothing. Texts are clipped for the same reason."""


def clip(text: str, limit: int) -> str:
    """`text`, or its start and end (about `limit` characters) around how many were left out.

    Both ends: a message quotes the value first and says what is wrong with it last.
    """
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}…({len(text) - 2 * half} characters)…{text[-half:]}"


def bad_request(field: str, description: str) -> Exception:
    """An error `abort_with` turns into INVALID_ARGUMENT with one field violation."""
    return _BadRequest([FieldViolation(field, description)])


def _shown(items: list[FieldViolation]) -> list[FieldViolation]:
    """The violations an answer lists: the first MAX_VIOLATIONS, clipped, then how many more."""
    shown = [FieldViolation(clip(v.field, 200), clip(v.description, 300)) for v in items[:MAX_VIOLATIONS]]
    hidden = len(items) - len(shown)
    if hidden:
        shown.append(FieldViolation("", f"and {hidden} more violation(s) of the same request"))
    return shown


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> NoReturn:
    """Turn a typed error into a gRPC status with rich details; the one place that does."""
    details: list[any_pb2.Any] = []
    reason = error_reason(exc)
    if isinstance(exc, _BadRequest | AgentReportError):
        shown = _shown(exc.items)
        code, message = code_pb2.INVALID_ARGUMENT, f"invalid request: {'; '.join(map(str, shown))}"
        violation = error_details_pb2.BadRequest.FieldViolation
        bad = [violation(field=v.field, description=v.description) for v in shown]
        details.append(_pack(error_details_pb2.BadRequest(field_violations=bad)))
    elif isinstance(exc, QuotaExceededError):
        code, message = code_pb2.RESOURCE_EXHAUSTED, str(exc)
        quota = error_details_pb2.QuotaFailure(
            violations=[
                error_details_pb2.QuotaFailure.Violation(
                    subject=f"tenant:{exc.tenant}",
                    description=f"{exc.limit}: {exc.description}",
                    quota_id=exc.limit,
                    quota_metric=f"shangzhuang.broker/{exc.limit}",
                    quota_dimensions={"tenant": exc.tenant},
                    quota_value=int(exc.value),
                )
            ]
        )
        details.append(_pack(quota))
        if exc.retry_after_s is not None:  # (a client library backs off by it: google.rpc.RetryInfo)
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(round(exc.retry_after_s * 1e9))
            details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    elif isinstance(exc, AuthError | AgentAuthError):
        code, message = code_pb2.UNAUTHENTICATED, str(exc)
    elif isinstance(exc, PermissionDeniedError):
        code, message = code_pb2.PERMISSION_DENIED, str(exc)
    elif isinstance(exc, JobNotFoundError):
        code, message = code_pb2.NOT_FOUND, str(exc)
    elif isinstance(exc, NotPlaceableError):
        more = f" (and {len(exc.reasons) - 1} more reason(s))" if len(exc.reasons) > 1 else ""
        code, message = code_pb2.FAILED_PRECONDITION, f"no allowed offer: {exc.reasons[0]}{more}"
        failure = error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type="PLACEMENT", subject=f"job[{exc.index}]", description=r
                )
                for r in exc.reasons[:MAX_VIOLATIONS]
            ]
        )
        details.append(_pack(failure))
    elif isinstance(exc, OutputElsewhereError | OutputRemovedError | JobNotQueuedError):  # said, not empty
        code, message = code_pb2.FAILED_PRECONDITION, str(exc)
    elif isinstance(exc, StoreUnavailable):  # retryable: a submit with its client_id is safe to resend
        code, message = code_pb2.UNAVAILABLE, f"the job store is unavailable, retry: {exc.summary}"
    elif isinstance(exc, StoreError):
        code, message = code_pb2.INTERNAL, f"store error: {exc}"
    else:
        log.error("internal error in an RPC", exc_info=exc)
        code, message = code_pb2.INTERNAL, f"internal error: {type(exc).__name__}"
    details.append(_pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN)))
    status = status_pb2.Status(code=code, message=clip(message, 2000), details=details)
    await context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("abort_with_status returned")  # pragma: no cover


# Stable, documented `ErrorInfo.reason` values (UPPER_SNAKE): clients switch on these,
# never on Python class names. Most specific class first.
ERROR_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (_BadRequest, "INVALID_ARGUMENT"),
    (AgentReportError, "INVALID_ARGUMENT"),
    (QuotaExceededError, "QUOTA_EXCEEDED"),
    (AgentAuthError, "AGENT_TOKEN_INVALID"),
    (AuthError, "UNAUTHENTICATED"),
    (PermissionDeniedError, "PERMISSION_DENIED"),
    (JobNotFoundError, "NOT_FOUND"),
    (NotPlaceableError, "NO_ALLOWED_OFFER"),
    (OutputElsewhereError, "OUTPUT_NOT_ON_REPLICA"),
    (OutputRemovedError, "OUTPUT_REMOVED"),
    (JobNotQueuedError, "JOB_NOT_QUEUED"),
    (StoreUnavailable, "STORE_UNAVAILABLE"),
    (StoreError, "STORE_ERROR"),
)


def error_reason(exc: BaseException) -> str:
    """The `ErrorInfo.reason` of a typed error; INTERNAL for anything unexpected."""
    return next((reason for cls, reason in ERROR_REASONS if isinstance(exc, cls)), "INTERNAL")


def _pack(msg: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg)
    return packed
