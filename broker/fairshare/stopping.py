"""Preempted work still stopping: its units are booked to the job it was preempted for. Pure.

Reclaim preempts borrowed attempts for an owner's job, and their units are not free until the
backend has stopped them: the grace, and then however long the backend takes. Slurm stops a
preempted job at a cut time limit in whole minutes (up to a minute past the grace), checks
limits now and then (SIGTERM seen 16 s past the limit) and kills after KillWait; a local process
that ignores SIGTERM is killed when the grace is over. Until the broker sees the attempt stopped
(its backend's status), its units count as free for that job and for no other, so a later pass
does not preempt more borrowed work for the same need. Seen stopped, they stay booked until that
job runs or leaves the queue (at most `SETTLE_S` more): a backend can read them busy a while
after the stop. A victim not seen stopped `STOP_CAP_S` after its grace is given up on (reported
by the caller), and reclaim may go on.
"""

from __future__ import annotations

from dataclasses import dataclass

STOP_CAP_S = 180.0
"""How long past its grace a preempted attempt may take to stop before reclaim stops waiting for
it: Slurm's cut limit rounds up to whole minutes (up to 60 s), then the limit check and KillWait
(30 s each by default) and the epilog. The Slurm adapter leaves a stopping job alone until 120 s
past its cut limit (`adapters.slurm._stop.STOP_MARGIN_S`); after that the reconciler cancels it."""

SETTLE_S = 120.0
"""How long units seen freed stay booked at most while the job they are booked to has not run.

It was 10 s, for a capacity reading to show them free. A loaded slurmctld read them busy longer
(its completing jobs, its scheduling cycle), and a pass then preempted a second borrowed job for
the same need. The job's start (or its leaving the queue) releases them first, so this only
bounds how long a job kept waiting by something else keeps other jobs off them."""


@dataclass(slots=True)
class Stopping:
    """One preempted attempt whose units are booked to `for_job` until `until` (a time in seconds)."""

    attempt_id: str
    partition: str
    units: int
    for_job: str
    since: float
    until: float
    stopped: bool = False
    beside: int = 0
    """Free units beside this attempt's that the reclaim counted on for `for_job`: booked to it
    as long as this attempt's units are (another job taking them left that job short)."""

    def kept_at(self, t: float) -> bool:
        """Still booked at `t`: past `until` (its cap, or its settling after the stop) it is over."""
        return self.until > t


class StoppingWork:
    """The preempted attempts still holding units, by attempt id. Every method takes the time."""

    def __init__(self) -> None:
        self._by_attempt: dict[str, Stopping] = {}
        self.version = 0
        """Counts the changes made: a saver compares it with its last."""

    def add(
        self, partition: str, attempt_id: str, units: int, for_job: str, t: float, grace_s: float,
        beside: int = 0,
    ) -> None:
        """Book the units of an attempt preempted at `t` (and `beside` free ones) to `for_job`,
        until it is seen stopped."""
        self._by_attempt[attempt_id] = Stopping(
            attempt_id, partition, units, for_job, t, t + grace_s + STOP_CAP_S, beside=beside
        )
        self.version += 1

    def stopped(self, attempt_id: str, t: float) -> None:
        """The attempt was seen stopped at `t`: its units stay booked until its job has them (`release`)."""
        s = self._by_attempt.get(attempt_id)
        if s is not None and not s.stopped and s.kept_at(t):
            s.stopped, s.until = True, t + SETTLE_S
            self.version += 1

    def release(self, for_job: str) -> bool:
        """The job runs, or left the queue: nothing stays booked to it. True if something was."""
        gone = [a for a, s in self._by_attempt.items() if s.for_job == for_job]
        for attempt_id in gone:
            del self._by_attempt[attempt_id]
        self.version += bool(gone)
        return bool(gone)

    def for_jobs(self) -> set[str]:
        """The jobs units are booked to."""
        return {s.for_job for s in self._by_attempt.values()}

    def prune(self, t: float) -> list[Stopping]:
        """Forget what is over at `t`; returns the attempts never seen stopped (overdue)."""
        over = [s for s in self._by_attempt.values() if not s.kept_at(t)]
        for s in over:
            del self._by_attempt[s.attempt_id]
        self.version += bool(over)
        return [s for s in over if not s.stopped]

    def entries(self) -> list[Stopping]:
        """Every booking held, oldest first: what a store keeps across a restart."""
        return sorted(self._by_attempt.values(), key=lambda s: (s.since, s.attempt_id))

    def put(self, s: Stopping) -> None:
        """Take back a booking a store kept (one made since stays as it is)."""
        if s.attempt_id not in self._by_attempt:
            self._by_attempt[s.attempt_id] = s
            self.version += 1

    def booked(self, partition: str, for_job: str) -> list[Stopping]:
        """The stopping attempts on `partition` whose units are `for_job`'s."""
        return [s for s in self._by_attempt.values() if s.partition == partition and s.for_job == for_job]

    def booked_elsewhere(self, partition: str, job: str, t: float) -> list[Stopping]:
        """The attempts on `partition` whose units are still booked at `t` to a job other than `job`."""
        return [
            s for s in self._by_attempt.values()
            if s.partition == partition and s.for_job != job and s.kept_at(t)
        ]
