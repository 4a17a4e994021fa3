"""Argument types shared by the client commands: refused as usage errors, never as tracebacks."""

from __future__ import annotations

import argparse
from collections.abc import Callable

MAX_SEQ = 2**63 - 1
"""The largest event sequence number the wire carries (int64)."""


def job_id(text: str) -> str:
    """A job id as typed: text the wire can carry (the server says whether such a job exists)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # (bytes the shell passed that are not UTF-8)
        raise argparse.ArgumentTypeError(f"{text!r} is not a job id: not UTF-8 text") from None
    return text


def whole_number(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from `low` (to `high`), else a usage error saying which."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if high is not None and not low <= n <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {n}")
        if n < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {n}")
        return n

    return parse


event_seq = whole_number(0, MAX_SEQ)
"""--after: an event sequence number (int64 on the wire)."""

page_size = whole_number(0)
"""--page-size: 0 for the server's default."""


def positive_seconds(text: str) -> float:
    """A time limit in seconds: a finite number above 0 (0 or less would give up before asking)."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < seconds <= MAX_WAIT_S:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, at most {MAX_WAIT_S:.0f}, "
                                         f"got {text}")
    return seconds


MAX_WAIT_S = 86400.0
"""A day: gRPC's deadline arithmetic overflows far above it (1e10 s read as already past)."""
