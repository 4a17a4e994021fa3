"""Values the store takes and returns: submissions, pages, spend, fair usage, moves, the lease."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from broker.model import AttemptId, Job, JobId, JobSpec, JobState, SiteId, TenantId
from broker.voucher_time import BEIJING, month_span, months_of


@dataclass(frozen=True)
class LeaseRow:
    """Who leads the schedulers: the epoch of the latest claim, its holder and lease."""

    epoch: int
    holder: str
    holder_pid: int | None
    """PostgreSQL backend pid of the holder's advisory-lock session (None on SQLite)."""
    lease_until: datetime


@dataclass(frozen=True)
class Submission:
    """One job to store; `client_id` makes the submission retry-safe per tenant."""

    spec: JobSpec
    client_id: str | None = None
    by: str = ""
    """The submitting token's name and role, for the audit trail (empty: the tenant itself)."""
    role: str = ""
    policy_hash: str = ""
    """The policy in force when it was admitted (empty: none was asked, as in a bulk load)."""

    @property
    def event_data(self) -> dict[str, str]:
        """The `submitted` event's data: who asked, as cancels record it, and under which policy."""
        who = {"by": self.by, "role": self.role} if self.by else {}
        return {**who, "policy_hash": self.policy_hash} if self.policy_hash else who


@dataclass(frozen=True)
class JobPage:
    jobs: list[Job]
    next_page_token: str


Draws = tuple[tuple[str, float], ...]
"""(voucher id, amount) each voucher pays of an attempt, in the order they pay."""


@dataclass(frozen=True)
class SpendEntry:
    """Money committed at one site for one job attempt: reserved while live, spent once done."""

    tenant: TenantId
    site: SiteId
    job_id: JobId
    attempt_id: AttemptId
    month: str
    reserved: float
    """Cash set aside for the attempt's estimate while it is live."""
    spent: float = 0.0
    """Cash actually owed once settled."""
    voucher: float = 0.0
    """Amount paid from vouchers rather than cash."""
    voucher_id: str | None = None
    """The voucher that pays first."""
    settled: bool = False
    fx: float | None = None
    """Policy-currency units per unit of the offer's currency when reserved: what it is settled
    at, whatever the policy says by then (None: reserved before the rate was recorded)."""
    draws: Draws = ()
    """(voucher id, amount) each voucher pays, in the order they pay; empty: `voucher_id` pays all
    of `voucher` (`voucher_draws`)."""
    started: datetime | None = None
    """When the attempt's run began; None: an entry from before runs were kept, wholly of `month`."""
    ends: datetime | None = None
    """When its run ends: estimated while reserved (raised as it runs past), actual once settled."""

    def share(self, since: datetime, until: datetime) -> float:
        """The part of the entry's money in [since, until): its run's part there (a run costs the
        same each hour), so a burst across a month's end is counted in each month for its part.
        A run of no length is all at its start; an entry without a run, all at `month`'s start."""
        if self.started is None or self.ends is None:
            return 1.0 if since <= month_span(self.month)[0] < until else 0.0
        if self.ends <= self.started:
            return 1.0 if since <= self.started < until else 0.0
        inside = min(self.ends, until) - max(self.started, since)
        return max(0.0, inside / (self.ends - self.started))

    def days(self, since: datetime, until: datetime) -> list[tuple[str, float]]:
        """(Beijing date, `share` of that day within [since, until)) of each day its run touches
        (a run of no length: its start's day). For an entry with a run only."""
        assert self.started is not None and self.ends is not None
        day = max(self.started, since).astimezone(BEIJING).replace(hour=0, minute=0, second=0, microsecond=0)
        out: list[tuple[str, float]] = []
        while day < min(max(self.ends, self.started + timedelta(microseconds=1)), until):
            nxt = day + timedelta(days=1)
            part = self.share(max(day, since), min(nxt, until))
            if part > 0:
                out.append((day.date().isoformat(), part))
            day = nxt
        return out

    def months(self) -> list[str]:
        """The budget months its money is counted in."""
        if self.started is None or self.ends is None or self.ends <= self.started:
            return [self.month]
        return months_of(self.started, self.ends)

    def in_month(self, month: str) -> float:
        """`share` of the Beijing budget month `month`."""
        return self.share(*month_span(month))

    def voucher_draws(self) -> Draws:
        """What each voucher pays of the entry, in the order they pay."""
        if self.draws:
            return self.draws
        return () if self.voucher_id is None else ((self.voucher_id, self.voucher),)


SplitCost = Callable[[SpendEntry, float, Mapping[str, float]], tuple[float, Draws]]
"""(open entry, its cost so far in the policy currency, what the tenant's other entries drew from
each voucher) -> (cash, draws): how `raise_reservations` splits a run's cost as settling would."""


@dataclass(frozen=True)
class FairUsage:
    """The fair-share ledger's state: per tenant (accelerators, CPUs, memory GB)·s decayed to
    `at_s` (epoch seconds) with half-life `half_life_s`."""

    half_life_s: float
    at_s: float
    sums: Mapping[str, tuple[float, float, float]]


@dataclass(frozen=True)
class ReclaimBooking:
    """Units of a preempted attempt booked to the job they were reclaimed for (epoch seconds)."""

    attempt_id: str
    partition: str
    units: int
    for_job: str
    since_s: float
    until_s: float
    stopped: bool
    beside: int = 0
    """Free units beside the attempt's that the reclaim counted on: kept for the job too."""


@dataclass(frozen=True)
class ReclaimState:
    """What reclaim keeps across a restart: the waste budget per partition, (level, epoch seconds
    it was taken at), and the preempted work whose units are still booked to another job."""

    levels: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    bookings: tuple[ReclaimBooking, ...] = ()


@dataclass(frozen=True)
class JobMove:
    """A state change of an attempt's job, written in the attempt update's transaction.

    Skipped when the job is already terminal, or not in `expect` when that is set.
    """

    state: JobState
    kind: str
    message: str = ""
    data: Mapping[str, Any] | None = None
    expect: JobState | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    at: datetime | None = None
    """The event's time when not the update's `now`: when a backend says the job started, for a
    RUNNING move learnt only once the job had ended (its job row's updated_at stays `now`)."""
