"""Hot reload: keep the last good policy, swap a valid new one in atomically.

The swap is one attribute assignment (atomic under the GIL): a decision that already read
`.current` finishes on the policy it started with; the next one sees the new policy.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from broker.policy._load import load_policy
from broker.policy._policy import Policy
from broker.policy._problems import PolicyError, Problem

log = logging.getLogger(__name__)


class PolicyWatcher:
    """Holds the current policy; `reload()` on file change (mtime polling) or on SIGHUP."""

    def __init__(self, path: Path, *, on_swap: Callable[[Policy], None] | None = None) -> None:
        """Load `path` now; raises PolicyError when even the first policy is invalid."""
        self.path = path
        self._on_swap = on_swap
        self._lock = threading.Lock()
        self._current = load_policy(path)
        self._mtime = self._stat()
        self.last_problems: list[Problem] = []

    @property
    def current(self) -> Policy:
        """The policy in force (read it once per decision)."""
        return self._current

    def _stat(self) -> tuple[float, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime, st.st_size)

    def reload(self) -> list[Problem]:
        """Load the file again; swap when valid, else keep the last good policy and log why."""
        with self._lock:
            self._mtime = self._stat()
            try:
                policy = load_policy(self.path)
            except PolicyError as exc:
                self.last_problems = exc.problems
                for problem in exc.problems:
                    log.error("policy reload refused: %s", problem)
                log.error("keeping policy %s", self._current.hash[:12])
                return exc.problems
            self.last_problems = []
            if policy.hash != self._current.hash:
                self._current = policy
                log.info("policy %s in force (from %s)", policy.hash[:12], self.path)
                if self._on_swap is not None:
                    self._on_swap(policy)
            return []

    def changed(self) -> bool:
        """Whether the file's mtime or size differs from the last load."""
        return self._stat() != self._mtime

    def poll(self) -> list[Problem] | None:
        """Reload if the file changed; None when it did not."""
        return self.reload() if self.changed() else None

    async def watch(self, interval_s: float = 2.0) -> None:
        """Poll the file until cancelled (run it as an asyncio task)."""
        while True:
            await asyncio.sleep(interval_s)
            await asyncio.to_thread(self.poll)

    def install_sighup(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Reload on SIGHUP: through the running loop when given, else a plain signal handler."""
        if loop is not None:
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.run_in_executor(None, self.reload))
        else:
            signal.signal(signal.SIGHUP, lambda _sig, _frame: self.reload())
