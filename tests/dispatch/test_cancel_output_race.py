"""A cancelled job keeps its output when a poll sees the stopped attempt before the stop returns.

Seen in CI (`tests/e2e/test_cancel_answer.py`): the cancel's stop (SIGTERM, the grace, the
group gone, the runner's exit code written) was through at the host, but before its call
returned, the regular poll read the attempt's end. The poll closed the attempt without its
output (the job had ended already: no move carries the tail), and the stop, finding the
attempt closed, did not keep the output either: `szb status` showed no output at all.
The real local executor and SQLite store; the stop's return is held until the poll ran.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from adapters.local import LocalAdapter
from broker.clock import SystemClock
from broker.dispatch.dispatcher import Dispatcher
from broker.model import JobSpec, JobState, SiteId, TenantId
from broker.planning import Planner
from broker.policy import PolicyWatcher
from broker.store import SqliteStore, Submission
from tests.e2e.conftest import PY, write_broker_config

SITE = SiteId("local")


class StopReturnsLate(LocalAdapter):
    """The stop is done at the host; its call returns only once the test's poll ran."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.stopped, self.polled = threading.Event(), threading.Event()

    def cancel(self, backend_id: str, token: str) -> None:
        super().cancel(backend_id, token)
        self.stopped.set()
        self.polled.wait(30)


def test_a_poll_that_closes_a_cancelled_attempt_keeps_its_output(tmp_path: Path) -> None:
    config = write_broker_config(tmp_path)
    store = SqliteStore(tmp_path / "broker.db")
    planner = Planner(PolicyWatcher(config.parent / "policy.yaml"), SystemClock())
    adapter = StopReturnsLate(SITE, {"data_dir": str(tmp_path / "data"), "accelerators": {"A800": 4}})
    code = "import time; print('started', flush=True); time.sleep(60)"
    spec = JobSpec.model_validate({
        "name": "talker", "command": [PY, "-c", code], "runtime_estimate": "10m",
        "resources": {"accelerators": {"count": 1, "any_of": ["A800"]}},
    })
    [(job, _)] = store.submit(TenantId("team-a"), [Submission(spec)], SystemClock().now())

    async def scenario() -> None:
        dispatcher = Dispatcher(store, {SITE: adapter}, planner=planner, clock=SystemClock())
        await dispatcher._schedule()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            attempts = [a for a in store.attempts_for(job.id) if a.backend_id is not None]
            if attempts and b"started" in adapter.read_log(attempts[0].backend_id, "", 0, 1000):
                break
            await asyncio.sleep(0.05)
        [attempt] = attempts
        cancelling = asyncio.create_task(dispatcher.cancel(store.get(job.id)))
        assert await asyncio.to_thread(adapter.stopped.wait, 30)
        await dispatcher._poll_one(attempt)  # the poll comes first: it closes the attempt
        assert store.get_attempt(attempt.id).state.terminal
        adapter.polled.set()
        await cancelling
        while dispatcher._background:
            await asyncio.gather(*list(dispatcher._background))

    asyncio.run(scenario())
    ended = store.get(job.id)
    assert ended.state == JobState.CANCELLED
    assert "started" in ended.log_tail, repr(ended.log_tail)
    store.close()
