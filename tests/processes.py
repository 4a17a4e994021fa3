"""A process a test found by its pid (a job's, a runner's), held by a pidfd.

A pid number goes to a new process once the old one is gone, within minutes on a busy host
and at once after a test rewinds the counter (ns_last_pid). A kill or a liveness check by
number in a test's cleanup could then reach another test's broker; a pidfd names the one
process it was opened on.
"""

from __future__ import annotations

import json
import os
import select
import signal
import time
from pathlib import Path


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


RUNNER = "_local_runner.py"
"""The local executor's runner script: one per attempt, the leader of the job's process group."""


def runners_under(folder: Path) -> dict[int, str]:
    """Local runners whose attempt folder lies under `folder`: pid -> the job's command line.

    A runner's argv ends with its attempt folder (inside the broker's data dir), so a test's
    own runners are told apart from another test run's on the same machine.
    """
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # ended meanwhile
        args = [a.decode(errors="replace") for a in argv if a]
        if len(args) >= 2 and args[-2].endswith(RUNNER) and Path(args[-1]).is_relative_to(folder):
            found[int(entry.name)] = _job_command(Path(args[-1]))
    return found


def _job_command(attempt: Path) -> str:
    try:
        return " ".join(json.loads((attempt / "launch.json").read_text())["argv"])
    except (OSError, ValueError, KeyError):
        return str(attempt)


def kill_runner_groups(pids: list[int]) -> None:
    """SIGKILL each runner's process group (the runner and its job), if that runner still lives."""
    for pid in pids:
        held = held_or_none(pid)
        if held is None:
            continue
        try:
            if held.alive():  # still this runner: its number was not passed on
                os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        finally:
            held.close()
