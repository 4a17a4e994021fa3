"""Argument types shared by the client commands: refused as usage errors, never as tracebacks."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from broker.durations import DurationTooLong, parse_duration
from broker.errors import BrokerError

BEIJING = timedelta(hours=8)
"""The CLI's times without an offset are Beijing time, as it shows them."""


class UsageError(BrokerError):
    """Wrong arguments, found past argparse: `broker.cli` prints it and exits 2."""


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
        if n < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {n}")
        if high is not None and n > high:  # (what the wire carries)
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {n}")
        return n

    return parse


event_seq = whole_number(0, MAX_SEQ)
"""--after: an event sequence number (int64 on the wire)."""

INT32_MAX = 2**31 - 1

page_size = whole_number(0, INT32_MAX)
"""--page-size, audit's --limit: 0 for the server's default (int32 on the wire)."""

tail_bytes = whole_number(0, MAX_SEQ)
"""logs --tail: 0 for all of it (int64 on the wire)."""

table_rows = whole_number(1)
"""How many rows a table shows (none would show only "... N more")."""


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


_BARE_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
"""A number with no unit (`7`, `7.5`, `1e3`): seconds to `parse_duration`, days to a person."""


def parse_since(text: str) -> datetime:
    """An ISO time or date (Beijing time when no offset is given), or an age like `2h`; a bare
    number is neither (7 s or 7 days?), but eight digits read as a date (20261208)."""
    if text.strip().startswith("-"):  # (`-1d`: no ISO time begins with a minus either)
        raise argparse.ArgumentTypeError(f"{text!r}: an age is positive, like 7d (since 7 days ago)")
    if _BARE_NUMBER.fullmatch(text.strip()) and not (text.strip().isdigit() and len(text.strip()) == 8):
        raise argparse.ArgumentTypeError(
            f"{text!r}: an age needs a unit (7d, 12h, 30m, 45s), a date its dashes (2026-12-08)"
        )
    try:
        if not text.strip().isdigit():
            return datetime.now(UTC) - parse_duration(text)
    except DurationTooLong as exc:  # an age, but too long to be one (not "neither")
        raise argparse.ArgumentTypeError(f"{text!r}: an age must be at most 10 years") from exc
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a time (2026-12-01T08:00+08:00) nor an age (2h, 1d; units d, h, m, s)"
        ) from exc
    try:
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC) - BEIJING
        when.astimezone(UTC)
    except OverflowError as exc:  # (0001-01-01 in Beijing time is before the first UTC instant)
        raise argparse.ArgumentTypeError(f"{text!r} is too far back") from exc
    return when


AGE_OPTIONS = ("--since", "--until")
"""Every command's options that take a time or an age (`parse_since`), whose value a user may
start with `-` (`-1d`): argparse takes `-1d` for an option and says only "expected one argument",
so the value is joined to its option (tests/test_cli_inputs.py checks that no such option is
missing here)."""


def join_dashed_values(argv: Sequence[str]) -> list[str]:
    """`--since -1d` as `--since=-1d` (and `--until`), so the option's own check says what is wrong."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":  # (what follows is positional)
            return [*out, *argv[i:]]
        value = argv[i + 1] if i + 1 < len(argv) else ""
        if arg in AGE_OPTIONS and value[:1] == "-" and value[1:2].isdigit():
            out.append(f"{arg}={value}")
            i += 2
            continue
        out.append(arg)
        i += 1
    return out
