"""Wire primitives of the gRPC edge: timestamps, durations and enums, with their range checks.

`broker.serde` builds messages from these; they live apart to keep each module one job.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TypeVar

from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from broker.api import job_pb2
from broker.durations import MAX_DURATION_S, format_duration
from broker.errors import BrokerError
from broker.model import JobState, Priority, Residency, SpotMode

_STATE_TO_PROTO = {s: job_pb2.JobState.Value(f"JOB_STATE_{s.value}") for s in JobState}
_STATE_FROM_PROTO = {v: k for k, v in _STATE_TO_PROTO.items()}
_PRIORITY_TO_PROTO = {p: job_pb2.Priority.Value(f"PRIORITY_{p.name}") for p in Priority}
_PRIORITY_FROM_PROTO = {v: k for k, v in _PRIORITY_TO_PROTO.items()}
_SPOT_TO_PROTO = {s: job_pb2.SpotMode.Value(f"SPOT_MODE_{s.name}") for s in SpotMode}
_SPOT_FROM_PROTO = {v: k for k, v in _SPOT_TO_PROTO.items()}
_RES_TO_PROTO = {r: job_pb2.DataResidency.Value(f"DATA_RESIDENCY_{r.name}") for r in Residency}
_RES_FROM_PROTO = {v: k for k, v in _RES_TO_PROTO.items()}


M = TypeVar("M", bound=Message)


class WireValueError(BrokerError, ValueError):
    """A wire value the domain cannot hold (out-of-range Duration/Timestamp, unknown enum)."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description


class UnknownEnumError(WireValueError):
    """A proto enum number we do not know (a newer or hostile client)."""

    def __init__(self, field: str, value: int) -> None:
        super().__init__(field, f"unknown enum value {value}")


# google.protobuf.Duration / Timestamp ranges (their .proto files define them).
_DURATION_MAX_S = 315_576_000_000
_TS_MIN_S = -62_135_596_800
_TS_MAX_S = 253_402_300_799
_NANOS = 999_999_999
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ts_to_proto(value: datetime) -> timestamp_pb2.Timestamp:
    # Whole days, seconds and microseconds since the epoch: exact, and a third of the cost of
    # Timestamp.FromDatetime (every answer to a submit carries two of these per job).
    since = value.astimezone(UTC) - _EPOCH
    return timestamp_pb2.Timestamp(
        seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1000
    )


def ts_from_proto(value: timestamp_pb2.Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=UTC)


def checked_duration(
    value: duration_pb2.Duration, field: str, *, longest: timedelta | None = None
) -> timedelta:
    """A wire Duration as a timedelta; WireValueError when it is not a valid whole-second one, or
    longer than the field's `longest` (said as that bound, not every duration's 10 years).

    Specs store durations as `1h30m`, so a sub-second part would be lost: it is refused.
    """
    seconds, nanos = value.seconds, value.nanos
    if abs(seconds) > _DURATION_MAX_S or abs(nanos) > _NANOS or (seconds * nanos < 0):
        raise WireValueError(field, "is not a valid google.protobuf.Duration")
    if nanos:
        raise WireValueError(field, "must be a whole number of seconds (nanos = 0)")
    if longest is not None and seconds > longest.total_seconds():
        raise WireValueError(field, f"must be at most {format_duration(longest)}")
    if abs(seconds) > MAX_DURATION_S:
        raise WireValueError(field, "must be at most 10 years")
    return timedelta(seconds=seconds)


def checked_timestamp(value: timestamp_pb2.Timestamp, field: str, *, exact: bool = False) -> datetime:
    """A wire Timestamp as an aware datetime (to the microsecond); WireValueError out of range, or
    with `exact` (a value the broker stores) finer than a microsecond."""
    if not _TS_MIN_S <= value.seconds <= _TS_MAX_S or not 0 <= value.nanos <= _NANOS:
        raise WireValueError(field, "is not a valid google.protobuf.Timestamp")
    if exact and value.nanos % 1000:
        # A datetime keeps microseconds: the rest would be dropped without a word, and the
        # job read back would carry another time than the one it was accepted with.
        raise WireValueError(field, "must be a whole number of microseconds (nanos a multiple of 1000)")
    return _EPOCH + timedelta(seconds=value.seconds, microseconds=value.nanos // 1000)


def duration_to_proto(value: timedelta) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromTimedelta(value)
    return d


def state_to_proto(state: JobState) -> job_pb2.JobState.ValueType:
    return _STATE_TO_PROTO[state]


def state_from_proto(value: int) -> JobState:
    if value not in _STATE_FROM_PROTO:
        raise UnknownEnumError("states", value)
    return _STATE_FROM_PROTO[value]  # type: ignore[index]


def checked_known_fields(msg: M, path: str = "") -> M:
    """`msg` itself when neither it nor any message in it carries a field this broker does not
    know; else WireValueError naming where (`path` within) and the field's number."""
    # Protobuf keeps an unknown field aside and the spec is built without it: a newer client's
    # constraint would be dropped unread, where a job YAML's unknown field is refused.
    unknown = UnknownFieldSet(msg)
    if len(unknown):
        raise WireValueError(path, f"unknown field number {unknown[0].field_number} of "
                                   f"{msg.DESCRIPTOR.name}: not a field this broker knows (a newer client?)")
    for fd, value in msg.ListFields():
        if fd.message_type is None or fd.message_type.GetOptions().map_entry:
            continue  # (scalars; the spec's maps hold strings)
        at = f"{path}.{fd.name}" if path else fd.name
        if fd.is_repeated:
            for i, item in enumerate(value):
                checked_known_fields(item, f"{at}[{i}]")
        else:
            checked_known_fields(value, at)
    return msg
