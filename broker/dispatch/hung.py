"""A cloud attempt whose instance never comes up: lost once the attempt timeout has passed.

The attempt timeout bounds the launch call; an instance the cloud accepted but keeps pending
(a zone that cannot place it, a host that never boots) would otherwise hold its job in
PROVISIONING for ever. Lost, it is terminated and its job goes to another offer, as after a
launch that timed out.
"""

from __future__ import annotations

from datetime import datetime

from broker.model import Attempt, AttemptState, AttemptStatus

NEVER_UP = "never came up: "
"""The start of a lost attempt's message when its instance was still pending at the timeout."""


def pending_too_long(
    attempt: Attempt, status: AttemptStatus, *, since: datetime, now: datetime, timeout_s: float
) -> AttemptStatus:
    """LOST when the attempt still pends `timeout_s` after `since` (its launch, or the broker's
    start: a restart gives every attempt the whole timeout again); else `status` as it is."""
    if status.state != AttemptState.PENDING or status.cause:  # held by the backend: it says why
        return status
    pending_s = (now - max(attempt.created_at, since)).total_seconds()
    if pending_s <= timeout_s:
        return status
    return AttemptStatus(
        state=AttemptState.LOST,
        message=f"{NEVER_UP}still pending {pending_s:.0f}s after its launch "
        f"(burst.attempt_timeout {timeout_s:.0f}s)",
    )
