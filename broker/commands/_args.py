"""Argument types shared by the client commands: refused as usage errors, never as tracebacks."""

from __future__ import annotations

import argparse

MAX_SEQ = 2**63 - 1
"""The largest event sequence number the wire carries (int64)."""


def job_id(text: str) -> str:
    """A job id as typed: text the wire can carry (the server says whether such a job exists)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # (bytes the shell passed that are not UTF-8)
        raise argparse.ArgumentTypeError(f"{text!r} is not a job id: not UTF-8 text") from None
    return text


def event_seq(text: str) -> int:
    """--after: an event sequence number, 0 to 2^63 - 1."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= n <= MAX_SEQ:
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_SEQ}")
    return n
