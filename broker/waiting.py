"""Bounded waits that never swallow the caller's cancellation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


async def within(work: Awaitable[T], timeout_s: float) -> T:
    """`await work`, raising TimeoutError (and cancelling it) after `timeout_s`.

    Not `asyncio.wait_for`: on Python 3.11 it returns the result, dropping the caller's cancel,
    when the work finishes in the loop turn the cancel arrives in (CPython gh-86296, fixed in
    3.12). A task looping on it then never stops: a deposed scheduler's site-report task did
    so, and the step-down, which waits for the term's tasks, never ended.
    """
    async with asyncio.timeout(timeout_s):
        return await work


def end_unawaited(work: asyncio.Future[Any]) -> None:
    """Take the end of work no one awaits any more (a done-callback), so asyncio does not report
    its exception as never retrieved."""
    if not work.cancelled() and (exc := work.exception()) is not None:
        log.info("work no longer awaited here ended: %s", exc)
