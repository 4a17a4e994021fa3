"""`broker.bounded`: a backend read that does not answer within the wait gives up, the site's
next reads fail at once until the hung one returns, and writes are never cut short."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

import pytest

from adapters.base import Capability, LogSource, TransientError
from broker.bounded import BoundedLogSource, Unresponsive, bounded
from broker.model import AttemptState, AttemptStatus, CapacitySnapshot, LaunchRequest, Offer, OwnedInstance

ROOT = Path(__file__).resolve().parents[2]


class HeldBackend:
    """A backend double whose status and cancel answer only once `release` is set."""

    site = "held"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: list[str] = []

    def unsupported(self) -> Mapping[Capability, str]:
        return {}

    def offers(self, now: datetime) -> Sequence[Offer]:
        return []

    def capacity(self, now: datetime) -> CapacitySnapshot | None:
        return None

    def submit(self, request: LaunchRequest) -> str:
        return "b-1"

    def status(self, backend_id: str) -> AttemptStatus:
        self.calls.append(f"status {backend_id}")
        self.release.wait(30)
        return AttemptStatus(state=AttemptState.RUNNING)

    def cancel(self, backend_id: str, token: str) -> None:
        self.calls.append(f"cancel {backend_id}")
        self.release.wait(30)

    def list_owned(self) -> Sequence[OwnedInstance]:
        self.calls.append("list_owned")
        return []


def test_a_read_gives_up_after_the_wait_and_the_next_fails_at_once_until_it_returns() -> None:
    backend = HeldBackend()
    adapter = bounded(backend, wait_s=0.2)
    with pytest.raises(Unresponsive, match=r"status did not answer within 0\.2s") as caught:
        adapter.status("b-1")
    assert isinstance(caught.value, TransientError)  # every caller already handles it as one
    # The hung status still runs: the next read is not sent to the backend at all.
    with pytest.raises(Unresponsive, match="an earlier status has not answered"):
        adapter.list_owned()
    assert backend.calls == ["status b-1"]
    backend.release.set()
    deadline = time.monotonic() + 5
    while True:  # the hung call returns in its own thread
        try:
            assert adapter.list_owned() == []
            break
        except Unresponsive:
            assert time.monotonic() < deadline, "the site stayed skipped after its call returned"
            time.sleep(0.01)
    assert adapter.status("b-2").state == AttemptState.RUNNING
    assert backend.calls == ["status b-1", "list_owned", "status b-2"]


def test_a_write_is_never_cut_short() -> None:
    backend = HeldBackend()
    adapter = bounded(backend, wait_s=0.05)
    threading.Timer(0.3, backend.release.set).start()
    adapter.cancel("b-1", "tok")  # waits for the backend's answer, however long past the wait
    assert backend.calls == ["cancel b-1"]


def test_a_log_source_stays_one() -> None:
    class LoggingBackend(HeldBackend):
        def read_log(self, backend_id: str, token: str, offset: int, limit: int) -> bytes:
            return b"out"

    wrapped = bounded(LoggingBackend(), wait_s=1)
    assert isinstance(wrapped, LogSource) and isinstance(wrapped, BoundedLogSource)
    assert wrapped.read_log("b-1", "tok", 0, 10) == b"out"
    assert not isinstance(bounded(HeldBackend(), wait_s=1), LogSource)


class SlowBackend(HeldBackend):
    """Answers every status, each after `delay_s`: slow, but healthy."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s

    def status(self, backend_id: str) -> AttemptStatus:
        time.sleep(self.delay_s)
        return AttemptStatus(state=AttemptState.RUNNING)


def test_many_reads_of_a_slow_but_healthy_backend_all_answer() -> None:
    """Review: the wait counted from when a read was queued behind the site's 4 threads, so 10
    polls of 0.6 s each (under a 1 s wait) took the site out of service. Each read now waits
    from its own start, and none queues behind another."""
    adapter = bounded(SlowBackend(0.3), wait_s=0.5)
    answers: list[object] = []

    def poll() -> None:
        try:
            answers.append(adapter.status("b").state)
        except Unresponsive as exc:
            answers.append(exc)

    threads = [threading.Thread(target=poll) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [AttemptState.RUNNING] * 12, answers


def test_a_read_that_hangs_does_not_hold_the_process_at_exit(tmp_path: Path) -> None:
    """Review: a hung read's thread was joined at interpreter exit: `szb serve` took 89 s to stop
    while a cloud API hung (SIGTERM; systemd's stop timeout is 90 s)."""
    script = tmp_path / "hang.py"
    script.write_text(HANG)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=20, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0 and "gave up" in done.stdout, done


HANG = """\
from tests.dispatch.test_bounded_reads import HeldBackend
from broker.bounded import Unresponsive, bounded

adapter = bounded(HeldBackend(), wait_s=0.2)  # its status waits 30 s for a release that never comes
try:
    adapter.status("b")
except Unresponsive:
    print("gave up", flush=True)
"""
