"""Bounded waits that never swallow the caller's cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(work: Awaitable[T], timeout_s: float) -> T:
    """`await work`, raising TimeoutError (and cancelling it) after `timeout_s`.

    Not `asyncio.wait_for`: on Python 3.11 it returns the result, dropping the caller's cancel,
    when the work finishes in the loop turn the cancel arrives in (CPython gh-86296, fixed in
    3.12). A task looping on it then never stops: a deposed scheduler's site-report task did
    so, and the step-down, which waits for the term's tasks, never ended.
    """
    async with asyncio.timeout(timeout_s):
        return await work
