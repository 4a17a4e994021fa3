"""A bounded wait whose caller is cancelled just as the awaited work finishes must still be
cancelled. On Python 3.11 `asyncio.wait_for` returned the result instead (CPython gh-86296): a
deposed scheduler's site-report task, cancelled that way, looped on, and its step-down (which
waits for the term's tasks) never ended."""

from __future__ import annotations

import asyncio

import pytest

from broker.waiting import within


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
