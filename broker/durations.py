"""Durations as job specs and policies write them (`6h`, `1h30m`, `90s`, `2d`)."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

from broker.errors import BrokerError

_NUMBER = r"(\d+(?:\.\d+)?)"
_DURATION = re.compile("".join(f"(?:{_NUMBER}{unit})?" for unit in "dhms"))
"""Each unit at most once, largest first: `1h1h` or `30m1h` is a typo, not 2h or 1h30m."""
_DURATION_UNITS = (86400.0, 3600.0, 60.0, 1.0)


def parse_duration(value: object) -> timedelta:
    """Parse `6h`, `1h30m`, `90s`, `2d` or a number of seconds into a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30m or 6h")
    if isinstance(value, int | float):
        return _seconds(float(value))
    if isinstance(value, str):
        text = value.strip().lower()
        if len(text) > 64:
            raise ValueError(_NOT_A_DURATION)
        if text and (parts := _DURATION.fullmatch(text)):
            numbers = zip(parts.groups(), _DURATION_UNITS, strict=True)
            seconds = sum(float(n) * size for n, size in numbers if n)
            return _seconds(seconds)
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return _seconds(float(text))
    raise ValueError(_NOT_A_DURATION)


_NOT_A_DURATION = "must be a duration such as 30m, 6h or 1h30m (units d, h, m, s, each once, largest first)"


MAX_DURATION_S = 10 * 366 * 86400.0
"""No duration in a spec or a policy is longer than ten years; larger ones are typos or attacks."""


class DurationTooLong(BrokerError, ValueError):
    """A duration written correctly but longer than `MAX_DURATION_S` (or not finite)."""


def _seconds(value: float) -> timedelta:
    # timedelta raises OverflowError (not ValueError) for huge values: keep it a field error.
    if not math.isfinite(value) or abs(value) > MAX_DURATION_S:
        raise DurationTooLong("must be a finite duration of at most 10 years")
    return timedelta(seconds=value)


def whole_seconds(value: timedelta) -> timedelta:
    """Reject sub-second parts: specs are stored as `1h30m`, so they would be lost."""
    if value.microseconds:
        raise ValueError("must be a whole number of seconds")
    return value


def format_duration(value: timedelta) -> str:
    """Render a timedelta the way job specs write it (`1h30m`)."""
    total = int(value.total_seconds())
    if total == 0:
        return "0s"
    if total < 0:
        return "-" + format_duration(-value)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, total = divmod(total, size)
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(lambda v: format_duration(v), return_type=str, when_used="json"),
]
