"""A process a test found by its pid (a job's, a runner's), held by a pidfd.

A pid number goes to a new process once the old one is gone, within minutes on a busy host
and at once after a test rewinds the counter (ns_last_pid). A kill or a liveness check by
number in a test's cleanup could then reach another test's broker; a pidfd names the one
process it was opened on.
"""

from __future__ import annotations

import os
import select
import signal
import time


class Held:
    """The process that has pid `pid` now (ProcessLookupError: none has)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._fd = os.pidfd_open(pid)

    def alive(self) -> bool:
        """Not yet ended (a zombie has ended): a pidfd turns readable when its process exits."""
        readable, _, _ = select.select([self._fd], [], [], 0)
        return not readable

    def wait_gone(self, timeout: float) -> bool:
        """Whether it ended within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self.alive()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal it if it still exists; a pid reused since is never touched."""
        try:
            signal.pidfd_send_signal(self._fd, sig)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        os.close(self._fd)


def held_or_none(pid: int) -> Held | None:
    """`Held(pid)`, or None when no process has that pid any more."""
    try:
        return Held(pid)
    except ProcessLookupError:
        return None
