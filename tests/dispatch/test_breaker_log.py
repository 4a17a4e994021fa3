"""A site's circuit breaker says when it opens and when it closes, one line each (a review of
issue 12: its transitions showed only in `szb status` and the breaker gauge, never in the log)."""

from __future__ import annotations

import logging

import pytest

from broker.dispatch.failover import BreakerState, CircuitBreakers


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def breaker_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == "breaker"]


def test_open_and_close_are_one_line_each_with_site_and_reason(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    breakers = CircuitBreakers(failure_threshold=2, reset_after_s=30, clock=clock)
    caplog.set_level(logging.INFO)
    aws = breakers.get("aws-cn")
    aws.record_failure("TransientError Throttling")
    assert not breaker_lines(caplog)  # one failure: still closed
    aws.record_failure("TransientError Throttling")
    aws.record_failure("TransientError Throttling")  # already open: no second line
    [opened] = breaker_lines(caplog)
    assert opened.levelno == logging.WARNING and opened.site == "aws-cn"  # type: ignore[attr-defined]
    assert opened.action == "open" and "TransientError Throttling" in opened.getMessage()  # type: ignore[attr-defined]
    clock.now += 30
    assert aws.allow() and aws.state is BreakerState.HALF_OPEN
    aws.record_failure("AuthError InvalidClientTokenId")  # the trial failed: open again, said again
    assert [r.action for r in breaker_lines(caplog)] == ["open", "open"]  # type: ignore[attr-defined]
    clock.now += 30
    assert aws.allow()
    aws.record_success()
    closed = breaker_lines(caplog)[-1]
    assert closed.action == "close" and closed.site == "aws-cn" and closed.levelno == logging.INFO  # type: ignore[attr-defined]
    aws.record_success()  # closed already: nothing to say
    breakers.get("aliyun").trip("AuthError InvalidAccessKeyId")
    last = breaker_lines(caplog)[-1]
    assert len(breaker_lines(caplog)) == 4 and last.site == "aliyun"  # type: ignore[attr-defined]
    assert "InvalidAccessKeyId" in last.getMessage()
