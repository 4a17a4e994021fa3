"""What the pure decision core tells the dispatcher to do with one queued job (typed, frozen).

Its JSON (events, explain) and wire form are made in `broker.serde_decision`, nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from broker.model import Offer

if TYPE_CHECKING:
    from broker.placement import Explanation


class Action(StrEnum):
    RUN = "run"
    """Start the job on `offer` now (on-prem, or a burst to a cloud)."""
    WAIT = "wait"
    """Leave it queued; something (capacity, budget, stock) may change."""
    REJECT = "reject"
    """No offer can ever be allowed: the job fails with the reasons."""


@dataclass(frozen=True, slots=True)
class DecisionFacts:
    """The numbers behind a burst decision (money in the policy's `currency`)."""

    waited_s: float = 0.0
    max_wait_s: float = 0.0
    remaining_wait_s: float = 0.0
    currency: str = ""
    score: float | None = None
    """The chosen offer's placement score."""
    onprem_site: str | None = None
    onprem_partition: str | None = None
    """The on-prem partition (`site/partition`) whose wait the decision weighed."""
    onprem_expected_wait_s: float | None = None
    onprem_total_cost: float | None = None
    cloud_offer: str | None = None
    cloud_total_cost: float | None = None
    cash: float | None = None
    """What a burst takes from the tenant's budget (its voucher pays `voucher`)."""
    voucher: float | None = None
    burst_pending_since: datetime | None = None
    """When the burst condition was first seen true (hysteresis memory)."""
    burst_in_s: float | None = None
    """A late job bursts this many seconds from now (its last responsible moment)."""


@dataclass(frozen=True, slots=True)
class FairShareNote:
    """Where the job stands in the fair-share order when it was decided."""

    position: int
    in_quota: bool
    share_ratio: float
    standing: str
    tenant_position: int | None = None


@dataclass(frozen=True, slots=True)
class ProjectionNote:
    """Where a projected on-prem wait came from (`burst.wait_model: projected`, live decisions)."""

    partition: str
    wait_s: float
    free_units: int
    running: tuple[tuple[int, float], ...]
    """(units, seconds until its expected end) of the soonest-ending running jobs (at most 10)."""
    running_jobs: int
    backend_queue_jobs: int
    """Jobs pending in the backend's own queue (Slurm), ahead of every broker waiter."""
    ahead_jobs: int
    ahead_units: int
    ahead_unit_hours: float
    runtime_ratio: float
    """The asking tenant's learned actual/estimated runtime ratio."""


@dataclass(frozen=True, slots=True)
class ReclaimVictim:
    """Borrowed work fair share asks to preempt so this job gets its quota back."""

    attempt: str
    tenant: str
    units: int
    why: str | None = None
    """What its preemption says when it is stopped for a job that would have burst
    (`burst.preempt_patient`); None: reclaim's own words."""
    lost_unit_s: float = 0.0
    """Unit-seconds of its work the preemption loses (its run, or since its last checkpoint), as
    reclaim's waste budget counts it; kept on its `preempted` event."""


@dataclass(frozen=True)
class Decision:
    action: Action
    offer: Offer | None = None
    reasons: tuple[str, ...] = ()
    facts: DecisionFacts = DecisionFacts()
    """The numbers behind the decision, recorded (as JSON, by serde) on the job's event."""
    policy_hash: str = ""
    burst: bool = False
    """True when `offer` is a cloud burst rather than on-prem capacity."""
    explanation: Explanation | None = None
    """The placement explanation behind the decision."""
    fair_share: FairShareNote | None = None
    reclaim: tuple[ReclaimVictim, ...] = ()
    projection: ProjectionNote | None = None
    """Where the on-prem wait came from, when it was projected (live explain, job events)."""
    passed_over: tuple[tuple[str, str], ...] = ()
    """(offer key, why) of each allowed cloud offer the burst decision could not use now (route
    limits, stock, the spot outlook, the deadline, money): explain shows why it was passed over."""
    cloud_refusals: tuple[str, ...] = ()
    """Why each allowed cloud offer could not be used, when the job waits for want of one (the
    reasons show the first few): a waiter's clock reads it to know what could change the answer."""

    @property
    def summary(self) -> str:
        return "; ".join(self.reasons)
