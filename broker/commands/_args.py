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


def server_address(text: str) -> str:
    """--server / SZB_SERVER: HOST:PORT, refused before any call (gRPC took `""` for an unknown
    error, `HOST` for port 443 and `http://HOST:PORT` for a DNS name)."""
    if "://" in text:
        where = text.partition("://")[2].split("/", 1)[0] or "HOST:PORT"
        raise argparse.ArgumentTypeError(
            f"takes HOST:PORT, not a URL ({text!r}): try --server {where} (TLS is --tls-ca, not https://)"
        )
    host, sep, port = text.rpartition(":")
    if not sep or not host.strip("[]") or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(
            f"must be HOST:PORT with a port of 1-65535, e.g. 127.0.0.1:50051 (as the flag or SZB_SERVER), "
            f"not {text!r}"
        )
    return text


def server_address_or_none(text: str) -> str:
    """As `server_address`, with `""` for no server (`szb explain`'s offline mode)."""
    return server_address(text) if text else text
