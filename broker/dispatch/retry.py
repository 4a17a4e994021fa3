"""Retrying a `TransientError` in place: exponential backoff, full jitter, a bounded number of
attempts and a bounded total time (tenacity). Nothing here reads the wall clock or sleeps unless
given the means to."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from adapters.base import TransientError

__all__ = ["RetryPolicy", "retry_transient"]

Clock = Callable[[], float]
"""Monotonic seconds; `time.monotonic` in production, a fake in tests."""

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds for retrying a TransientError in place."""

    max_attempts: int = 5
    """Calls in all, the first included."""
    max_total_s: float = 60.0
    """No new attempt starts after this many seconds since the first."""
    initial_backoff_s: float = 0.5
    """Scale of the exponential backoff (full jitter: a random wait up to this x 2^n)."""
    max_backoff_s: float = 20.0


class _StopAfterClock(stop_base):
    """Stop once `limit_s` have passed on the injected clock since the first call."""

    def __init__(self, limit_s: float, clock: Clock) -> None:
        self.limit_s = limit_s
        self.clock = clock
        self.started = clock()

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.clock() - self.started >= self.limit_s


def retry_transient(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
    clock: Clock = time.monotonic,
) -> T:
    """Call `fn`, retrying only `TransientError`; the last error is re-raised unchanged."""
    retrying = Retrying(
        retry=retry_if_exception_type(TransientError),
        stop=stop_after_attempt(policy.max_attempts) | _StopAfterClock(policy.max_total_s, clock),
        wait=wait_random_exponential(multiplier=policy.initial_backoff_s, max=policy.max_backoff_s),
        sleep=sleep,
        reraise=True,
    )
    return retrying(fn)
