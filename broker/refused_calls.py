"""Operator actions refused to the caller (a tenant's drain or undrain, a cancel of a job that
is not the caller's), written to the audit trail (`refused_actions`), at most `PER_MINUTE` a
minute per principal: a tenant repeating a refused call cannot flood the store. What goes past
the limit is counted, and the count is written as one `unrecorded` entry when that principal's
next minute opens."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from broker.auth import Principal
from broker.clock import Clock
from broker.store import JobNotFoundError, JobStore, RefusedAction, StoreError

log = logging.getLogger(__name__)

PER_MINUTE = 10
_MINUTE = timedelta(minutes=1)


@dataclass
class _Window:
    start: datetime
    written: int = 0
    dropped: int = 0


class RefusedCalls:
    """The audit trail's writer of refused actions, with its per-principal limit."""

    def __init__(self, store: JobStore, clock: Clock, per_minute: int = PER_MINUTE) -> None:
        self.store, self.clock, self.per_minute = store, clock, per_minute
        self._windows: dict[tuple[str, str], _Window] = {}  # (tenant, name): bounded by the tokens

    def record(
        self, caller: Principal, action: str, target: str, code: str, reason: str | Callable[[], str]
    ) -> None:
        """Write that `caller` was refused `action` on `target` (never raises: the answer stands);
        a callable `reason` is asked only when the entry is written."""
        now, key = self.clock.now(), (caller.tenant, caller.who)
        window = self._windows.get(key)
        entries: list[RefusedAction] = []
        if window is None or not window.start <= now < window.start + _MINUTE:
            if window is not None and window.dropped:
                entries.append(RefusedAction(
                    now, caller.tenant, caller.who, caller.role.value, "unrecorded", "", "",
                    f"{window.dropped} more refused call(s) by {caller.who} in the minute from "
                    f"{window.start:%Y-%m-%d %H:%M:%S} not recorded (at most {self.per_minute} a minute)",
                ))
            window = self._windows[key] = _Window(now)
        if window.written >= self.per_minute:
            window.dropped += 1
            return
        window.written += 1
        try:
            why = reason if isinstance(reason, str) else reason()
            entries.append(RefusedAction(now, caller.tenant, caller.who, caller.role.value, action, target,
                                         code, why))
            for entry in entries:
                self.store.record_refused_action(entry)
        except StoreError as exc:
            log.warning("could not record a refused %s by %s in the audit trail: %s", action, caller.who, exc)

    def cancel_refused(self, caller: Principal, job_id: str) -> None:
        """A cancel answered NOT_FOUND: the caller is told nothing more, the auditor whose job it is."""
        def why() -> str:
            try:
                return f"the job is tenant {self.store.get(job_id).tenant}'s"
            except JobNotFoundError:
                return "no such job"

        self.record(caller, "cancel", job_id, "NOT_FOUND", why)
