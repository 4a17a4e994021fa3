"""Cancels an API replica asked for and the active scheduler has not settled yet.

A replica calls no backend, so it cannot tell whether a running job's run already ended (its
exit code written, not yet read): recording such a job CANCELLED at once would rewrite a
finished job's result. It records the request instead; the scheduler, which can ask the
backend, cancels the job or finds it ended first, then drops the request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from broker.model import JobId

REQUESTED = "cancel_requested"
"""The event kind of a cancel recorded by an API replica, waiting for the scheduler."""
TOO_LATE = "cancel_too_late"
"""The event kind of a requested cancel that came after the job had ended on its own."""


@dataclass(frozen=True)
class CancelRequest:
    """Who asked to cancel a running job through an API replica, and when."""

    job_id: JobId
    by: str
    role: str
    time: datetime


COLS = "job_id, by_name, role, time"
PUT = (
    f"INSERT INTO cancel_requests ({COLS}) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (job_id) DO NOTHING RETURNING job_id"
)
FIND = f"SELECT {COLS} FROM cancel_requests WHERE job_id = ?"
OLDEST = f"SELECT {COLS} FROM cancel_requests ORDER BY time, job_id LIMIT ?"
DROP = "DELETE FROM cancel_requests WHERE job_id = ?"


def from_row(r: Sequence[Any], dt: Callable[[Any], datetime]) -> CancelRequest:
    return CancelRequest(job_id=JobId(str(r[0])), by=str(r[1]), role=str(r[2]), time=dt(r[3]))
