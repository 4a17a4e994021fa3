"""Row helpers shared by the store: job ids, attempt rows, and reading stored specs."""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from broker.jobspec import STORED
from broker.model import Attempt, AttemptId, AttemptState, JobId, JobSpec, Offer, SiteId

UNREADABLE_SPEC = "unreadable spec"
"""The reason a job is quarantined with when its stored spec no longer validates."""

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class JobIds:
    """Time-ordered ids (ms clock, a counter within the ms, randomness): listing by id is by age."""

    def __init__(self) -> None:
        self._last_ms = 0
        self._seq = 0
        self._lock = threading.Lock()

    def next(self, now: datetime) -> JobId:
        with self._lock:
            ms = max(int(now.timestamp() * 1000), self._last_ms)
            self._seq = self._seq + 1 if ms == self._last_ms else 0
            self._last_ms = ms
            return JobId(f"j-{ms:011x}{self._seq:04x}{secrets.token_hex(3)}")


def attempt_from_row(r: Sequence[Any], to_datetime: Callable[[Any], datetime]) -> Attempt:
    """An attempt from its row (column order of both stores); times converted by `to_datetime`."""
    return Attempt(
        id=AttemptId(r[0]),
        job_id=JobId(r[1]),
        number=r[2],
        site=SiteId(r[3]),
        offer=Offer.model_validate_json(r[4]),
        token=r[5],
        state=AttemptState(r[6]),
        backend_id=r[7],
        created_at=to_datetime(r[8]),
        updated_at=to_datetime(r[9]),
        error=r[10],
        secret_hash=r[11] or "",
    )


def attempt_updates(
    state: AttemptState | None, backend_id: str | None, error: str | None, secret_hash: str | None = None
) -> list[tuple[str, str]]:
    """The (column, value) pairs an `update_attempt` call sets besides `updated_at`."""
    values = (
        ("state", state.value if state else None),
        ("backend_id", backend_id),
        ("error", error),
        ("secret_hash", secret_hash),
    )
    return [(col, value) for col, value in values if value is not None]


LIVE_ATTEMPT_STATES = (AttemptState.PENDING.value, AttemptState.RUNNING.value)
"""An attempt's state may only change from one of these: a terminal attempt is never rewritten."""


def placeholder_spec(text: str) -> JobSpec:
    """A stand-in for a spec that no longer validates: its name when readable, nothing to run."""
    name = "unreadable"
    try:
        raw = json.loads(text)
        if isinstance(raw, dict) and isinstance(raw.get("name"), str) and _NAME.match(raw["name"]):
            name = raw["name"]
    except ValueError:
        pass
    return JobSpec(name=name, command=("false",), runtime_estimate=timedelta(seconds=1))


def read_spec(text: str) -> JobSpec | str:
    """The stored spec, or why it cannot be read (a row written by an older or buggy broker)."""
    try:
        return JobSpec.model_validate_json(text, context=STORED)
    except ValidationError as exc:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": str(exc)}
        where = ".".join(str(p) for p in first["loc"])
        return f"{UNREADABLE_SPEC}: {where + ': ' if where else ''}{first['msg']}"
    except ValueError as exc:
        return f"{UNREADABLE_SPEC}: {exc}"


def new_attempt_id(job_id: JobId, number: int) -> AttemptId:
    return AttemptId(f"{job_id}-a{number}")
