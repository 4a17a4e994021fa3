"""A graceful stop for fair-share reclaim: the job's time limit, cut to its run time + the grace.

slurmrestd 22.05 (v0.0.38) cancels a job at once on DELETE, whatever ``?signal=`` says, so a
preempted job had no grace (SIGTERM within 0.1 s of the preemption on the test cluster). Slurm
does give one at a time limit: SIGTERM there, SIGKILL ``KillWait`` later. `grace_update` is
the job update (``POST job/{id}``) that sets the limit to the minutes the job has run plus the
grace, rounded up (Slurm's limits are whole minutes; slurmctld checks them about every 30 s,
so SIGTERM may come that much later), never later than the limit it has. It marks the comment
``szb:stop=<epoch>`` (when the limit falls), so the reconciler of any broker leaves the job to
Slurm until then (`stopping`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from adapters.slurm._records import decode_marks, encode_marks, slurm_number

STOP_MARK = "stop"
STOP_MARGIN_S = 120.0
"""How long past its limit a stopping job is still left alone: slurmctld's limit check (~30 s),
KillWait, the epilog. A job still running after that was not stopped (its limit raised again)."""


def grace_update(job: Mapping[str, Any], now_s: float, grace_s: float) -> dict[str, Any] | None:
    """The job update that stops a running job `grace_s` from `now_s` (None: not started)."""
    start = slurm_number(job.get("start_time"))
    if not start or start > now_s:
        return None
    minutes = max(1, math.ceil((now_s - start + grace_s) / 60))
    limit = slurm_number(job.get("time_limit"))
    if limit is not None:
        minutes = min(minutes, int(limit))
    marks = decode_marks(job.get("comment"))
    marks[STOP_MARK] = str(int(start + minutes * 60))
    return {"time_limit": minutes, "comment": encode_marks(marks)}


def stopping(marks: Mapping[str, str], now_s: float) -> bool:
    """Is the job one a graceful stop is ending (its marks), not yet overdue?"""
    try:
        until = float(marks[STOP_MARK])
    except (KeyError, ValueError):
        return False
    return now_s < until + STOP_MARGIN_S
