"""A cloud attempt whose instance never comes up: lost once the attempt timeout has passed.

The attempt timeout bounds the launch call; an instance the cloud accepted but keeps pending
(a zone that cannot place it, a host that never boots) would otherwise hold its job in
PROVISIONING for ever. Lost, it is terminated and its job goes to another offer, as after a
launch that timed out.
"""

from __future__ import annotations

from broker.model import Attempt, AttemptState, AttemptStatus

NEVER_UP = "never came up: "
"""The start of a lost attempt's message when its instance was still pending at the timeout."""


def pending_too_long(
    attempt: Attempt, status: AttemptStatus, pending_s: float, *, timeout_s: float
) -> AttemptStatus:
    """LOST when the attempt still pends `timeout_s` after it began: `pending_s` since its launch, or
    the broker's start (a restart gives every attempt the whole timeout again); else `status`."""
    if status.state != AttemptState.PENDING or status.cause:  # held by the backend: it says why
        return status
    if pending_s <= timeout_s:
        return status
    return AttemptStatus(
        state=AttemptState.LOST,
        message=f"{NEVER_UP}still pending {pending_s:.0f}s after its launch "
        f"(burst.attempt_timeout {timeout_s:.0f}s)",
    )


def listing_grace(adapter: object) -> float:
    """Seconds the adapter's cloud may take to list an instance it has just started (0: none).

    EC2's reads are eventually consistent: DescribeInstances may answer
    InvalidInstanceID.NotFound for an instance RunInstances has just returned. Read as gone, the
    healthy instance was terminated and the job's attempt spent (a spot one even blocked its
    region as preempted). Such an adapter says how late its cloud lists in `unlisted_grace_s`."""
    grace = getattr(adapter, "unlisted_grace_s", 0.0)
    return float(grace) if isinstance(grace, int | float) else 0.0


def not_listed_yet(attempt: Attempt, *, grace_s: float, pending_s: float, timeout_s: float) -> bool:
    """Is an unknown backend id of this attempt its cloud's eventual consistency, not a vanished
    instance? Only while it was never seen up, within `grace_s` (at most the attempt timeout,
    `timeout_s`) of its launch, `pending_s` ago."""
    if attempt.state != AttemptState.PENDING:
        return False
    return pending_s <= min(grace_s, timeout_s)
