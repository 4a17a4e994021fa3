"""What the dispatcher needs from the planning shell, and the numbers it works with."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from adapters.base import AdapterError
from broker.burst import BurstInputs
from broker.burst.snapshot import PassSnapshot
from broker.decision import Decision
from broker.dispatch.failover import NextStep
from broker.dispatch.health import SiteHealth
from broker.dispatch.retry import RetryPolicy
from broker.dispatch.spend import SpendLedger
from broker.dispatch.waits import LiveWaits
from broker.fair_queue import FairQueue
from broker.fair_reclaim import Reclaimer
from broker.fairshare import BatchIdentity
from broker.model import Attempt, AttemptStatus, Job, Offer, SiteId, TenantId
from broker.policy import Policy
from broker.store import JobStore


class DecisionMaker(Protocol):
    """What the dispatcher needs from the planning shell (`broker.planning.Planner`)."""

    ledger: SpendLedger
    fair: FairQueue
    health: SiteHealth

    @property
    def policy(self) -> Policy: ...

    def snapshot(self, now: datetime, live: Sequence[Attempt]) -> PassSnapshot: ...

    async def read_snapshot(
        self, now: datetime, live: Sequence[Attempt], *, wait_s: float | None
    ) -> PassSnapshot: ...

    def decide(self, job: Job, snap: PassSnapshot, store: JobStore) -> Decision: ...

    @property
    def waits(self) -> LiveWaits: ...

    def queueing_sites(self) -> frozenset[str]: ...

    def catalog_offers(self) -> list[Offer]: ...

    def inputs_for(
        self,
        tenant: TenantId,
        snap: PassSnapshot,
        store: JobStore,
        *,
        queued_since: datetime,
        pending_since: datetime | None,
        projected_wait: dict[str, float] | None = None,
        launches_ahead: Mapping[SiteId, int] | None = None,
    ) -> BurstInputs: ...

    def reserve(self, job: Job, attempt: Attempt, decision: Decision, store: JobStore) -> bool: ...

    def settle(
        self, job: Job, attempt: Attempt, status: AttemptStatus, store: JobStore, *, ran: bool = True
    ) -> None: ...

    def failover(self) -> FailoverPlan: ...

    def record_failure(self, attempt: Attempt, error: AdapterError) -> NextStep: ...

    def record_success(self, attempt: Attempt) -> None: ...

    def begin_trial(self, site: SiteId) -> str | None: ...

    def record_preemption(self, attempt: Attempt) -> None: ...

    def needs_agent(self, site: str) -> bool: ...

    def launched(self, attempt: Attempt, now: datetime) -> None: ...

    def restore_launches(self, store: JobStore) -> None: ...

    def order_queue(self, jobs: Sequence[Job], now: datetime, *, full: bool) -> list[Job]: ...

    def still_waiting(self, job: Job) -> None: ...

    def observe_live(self, live: Sequence[Attempt], now: datetime, store: JobStore) -> None: ...

    def standing(self, job_id: str, stored: str = "") -> str | None: ...

    @property
    def reclaimer(self) -> Reclaimer: ...

    def batch_account(self, job: Job) -> BatchIdentity: ...

    def mark_unreachable(self, site: SiteId, reason: str) -> None: ...

    def mark_reachable(self, site: SiteId) -> None: ...


@dataclass(frozen=True)
class FailoverPlan:
    """The policy's numbers for retries, timeouts and giving up, as dispatch uses them."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    attempt_timeout_s: float = 1200.0
    give_up_after_s: float = 86400.0
    heartbeat_timeout_s: float = 300.0
    max_attempts: int = 5


# Errors that are the offer's fault, not the job's: they move the job on without using up
# one of its attempts (the give-up deadline still bounds the chain).
OFFER_FAULTS = (
    NextStep.BLOCK_OFFER_TRY_NEXT,
    NextStep.BLOCK_REGION_TRY_NEXT,
    NextStep.BLOCK_SPOT_TRY_NEXT,
    NextStep.DROP_OFFER_TRY_NEXT,
    NextStep.OPEN_CIRCUIT_TRY_NEXT,
)


@dataclass
class DispatchStats:
    decisions: int = 0
    launches: int = 0
    bursts: list[datetime] = field(default_factory=list)


def failover_plan(policy: Policy) -> FailoverPlan:
    """The policy's retry, timeout and give-up numbers as the dispatcher uses them."""
    b = policy.burst
    return FailoverPlan(
        retry=RetryPolicy(
            max_attempts=b.retries.max_transient_retries + 1,
            max_total_s=b.retries.backoff_max.total_seconds() * 2,
            initial_backoff_s=b.retries.backoff_initial.total_seconds(),
            max_backoff_s=b.retries.backoff_max.total_seconds(),
        ),
        attempt_timeout_s=b.attempt_timeout.total_seconds(),
        give_up_after_s=b.give_up_after.total_seconds(),
        heartbeat_timeout_s=b.heartbeat_timeout.total_seconds(),
        max_attempts=b.retries.max_attempts,
    )
