"""The job state machine: the one place that says which moves are legal."""

from __future__ import annotations

from broker.errors import BrokerError
from broker.model import JobState

Q, PL, PR, RU = JobState.QUEUED, JobState.PLACING, JobState.PROVISIONING, JobState.RUNNING
OK, KO, CA, PE = JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.PREEMPTED

# Failover and lost attempts send a job back to QUEUED from PLACING/PROVISIONING/RUNNING;
# a job provisioning in a cloud may also fail outright when every offer is exhausted.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    Q: frozenset({PL, CA, KO}),
    PL: frozenset({PR, Q, CA, KO}),
    PR: frozenset({RU, Q, CA, KO, PE, OK}),
    RU: frozenset({OK, KO, CA, PE, Q}),
    PE: frozenset({Q, CA, KO}),
    OK: frozenset(),
    KO: frozenset(),
    CA: frozenset(),
}


class IllegalTransitionError(BrokerError):
    """A caller tried a move the state machine forbids: a bug, never silently applied."""

    def __init__(self, job_id: str, old: JobState, new: JobState) -> None:
        super().__init__(f"job {job_id}: illegal transition {old} -> {new}")
        self.old = old
        self.new = new


def check_transition(job_id: str, old: JobState, new: JobState) -> None:
    """Raise IllegalTransitionError unless `old -> new` is a legal move."""
    if new not in TRANSITIONS[old]:
        raise IllegalTransitionError(job_id, old, new)
