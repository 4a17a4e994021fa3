"""A bounded wait whose caller is cancelled just as the awaited work finishes must still be
cancelled. On Python 3.11 `asyncio.wait_for` returned the result instead (CPython gh-86296): a
deposed scheduler's site-report task, cancelled that way, looped on, and its step-down (which
waits for the term's tasks) never ended."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging

import pytest

from broker.waiting import end_unawaited, within


def test_a_cancel_in_the_turn_the_work_finishes_cancels_the_caller() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        work: asyncio.Future[str] = loop.create_future()

        async def caller() -> str:
            return await within(asyncio.shield(work), 2.0)

        task = asyncio.create_task(caller())
        await asyncio.sleep(0)  # the caller now waits on the work
        work.set_result("a reading")
        task.cancel()  # in the same loop turn as the result
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())


def test_the_result_in_time_and_a_timeout_after() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[int] = loop.create_future()
        loop.call_later(0.01, ready.set_result, 7)
        assert await within(ready, 5.0) == 7
        never: asyncio.Future[int] = loop.create_future()
        with pytest.raises(TimeoutError):
            await within(never, 0.05)
        assert never.cancelled()  # what timed out was stopped, like wait_for does

    asyncio.run(scenario())


def test_work_no_one_awaits_any_more_is_not_reported_as_a_lost_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found by a held-out review of issue 13: a deposed leader's launch, shielded and left to end
    by itself, was logged at ERROR as "Task exception was never retrieved"."""

    async def main() -> None:
        async def fails() -> None:
            await asyncio.sleep(0.01)
            raise RuntimeError("launch stopped before its next call")

        work = asyncio.ensure_future(fails())
        waiter = asyncio.ensure_future(within(asyncio.shield(work), 5))
        await asyncio.sleep(0)
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
        work.add_done_callback(end_unawaited)
        await asyncio.sleep(0.05)
        del work

    with caplog.at_level(logging.INFO):
        asyncio.run(main())
        gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()], caplog.text
    assert any("launch stopped before its next call" in r.getMessage() for r in caplog.records)
