"""Logging a failing store without a flood (a full disk, PostgreSQL down).

Every dispatch pass and every poll of every running attempt meets the same failure while the
store is out; logged each time, that is a line (or a traceback) per attempt per poll, often
written onto the very disk that is full. This keeps the first failure of each kind, then at most
one line per kind per interval with the number of repeats, and one line when the store is back.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime

from broker.clock import Clock

REPEAT_EVERY_S = 60.0
"""At most one line per kind of failure this often while the store stays out."""


@dataclass
class _Kind:
    last_line: datetime
    held: int = 0
    """Failures since the last line."""


class StoreOutageLog:
    """Logs store failures by kind (`"dispatch pass"`, `"polling attempts"`), rate-limited."""

    def __init__(self, logger: logging.Logger, clock: Clock, *, every_s: float = REPEAT_EVERY_S) -> None:
        self._log = logger
        self._clock = clock
        self._every_s = every_s
        self._open: dict[str, _Kind] = {}
        self._since: datetime | None = None
        """When the first failure of this outage was seen."""
        self._failures = 0
        self._lock = threading.Lock()

    def failed(self, kind: str, exc: BaseException) -> None:
        """One `kind` of work failed on the store: logged the first time, then summed up."""
        now = self._clock.now()
        with self._lock:
            self._since = self._since or now
            self._failures += 1
            seen = self._open.get(kind)
            if seen is None:
                self._open[kind] = _Kind(last_line=now)
                line = "%s: the store is unavailable: %s (repeats are counted, one line a minute)"
                self._log.warning(line, kind, exc)
                return
            seen.held += 1
            waited = (now - seen.last_line).total_seconds()
            if waited < self._every_s:
                return
            held, seen.held, seen.last_line = seen.held, 0, now
        line = "%s: the store is still unavailable: %s (%d failures in the last %.0f s)"
        self._log.warning(line, kind, exc, held, waited)

    def ok(self, kind: str) -> None:
        """`kind` of work went through: once no kind is failing, one line says the store is back."""
        now = self._clock.now()
        with self._lock:
            if self._open.pop(kind, None) is None or self._open or self._since is None:
                return
            out_s, failures = (now - self._since).total_seconds(), self._failures
            self._since, self._failures = None, 0
        self._log.warning("the store is available again after %.0f s out (%d failures)", out_s, failures)
