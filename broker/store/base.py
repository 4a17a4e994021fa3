"""The store contract: jobs, attempts and an append-only event log per job. Every implementation
enforces the state machine inside the transaction that writes the new state and its event, so a
job's state and its audit log never disagree."""

from __future__ import annotations

import abc
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from broker.clock import Clock, SystemClock
from broker.model import (
    Attempt,
    AttemptId,
    AttemptState,
    Job,
    JobEvent,
    JobId,
    JobSpec,
    JobState,
    Offer,
    SiteId,
    TenantId,
)
from broker.store._audit_store import AuditStore
from broker.store._records import Draws as Draws
from broker.store._records import FairUsage as FairUsage
from broker.store._records import JobMove as JobMove
from broker.store._records import JobPage as JobPage
from broker.store._records import LeaseRow as LeaseRow
from broker.store._records import ReclaimBooking as ReclaimBooking
from broker.store._records import ReclaimState as ReclaimState
from broker.store._records import SpendEntry as SpendEntry
from broker.store._records import SplitCost as SplitCost
from broker.store._records import Submission as Submission
from broker.store._rows import UNREADABLE_SPEC as UNREADABLE_SPEC
from broker.store._rows import JobIds, placeholder_spec, read_spec
from broker.store.errors import FencedOut as FencedOut
from broker.store.errors import JobNotFoundError as JobNotFoundError
from broker.store.errors import LeaseBlocked as LeaseBlocked
from broker.store.errors import StoreError as StoreError
from broker.store.errors import StoreUnavailable as StoreUnavailable

EventListener = Callable[[JobEvent], None]

log = logging.getLogger(__name__)

UNFINISHED = (JobState.QUEUED, JobState.PLACING, JobState.PROVISIONING, JobState.RUNNING, JobState.PREEMPTED)
"""States a tenant's `max_queued_jobs` quota counts."""


# Fields of a Job that callers may set alongside a transition or on their own.
JOB_FIELDS = frozenset({"site", "exit_code", "log_tail", "message", "policy_hash", "attempts", "spec"})


class JobStore(AuditStore):
    """Durable state of the broker. Methods are synchronous and short; none scans all jobs."""

    def __init__(self) -> None:
        self._listeners: list[EventListener] = []
        self.ids = JobIds()
        self.clock: Clock = SystemClock()
        """Stamps the events the store writes on its own (quarantines); the app sets its clock."""
        self._poisoned: dict[JobId, tuple[JobState, str]] = {}
        self._poison_lock = threading.Lock()

    def _job_spec(self, job_id: JobId, state: JobState, text: str) -> tuple[JobSpec, JobState, str | None]:
        """The spec of a row; an unreadable one is queued for quarantine instead of raising.

        Returns the spec (a placeholder when unreadable), the state callers should see and, when
        the job is being quarantined, the reason.
        """
        spec = read_spec(text)
        if isinstance(spec, JobSpec):
            return spec, state, None
        if state.terminal:
            return placeholder_spec(text), state, None
        with self._poison_lock:
            self._poisoned[job_id] = (state, spec)
        return placeholder_spec(text), JobState.FAILED, spec

    def _flush_quarantine(self) -> None:
        """FAIL every job whose spec was found unreadable since the last call, with an event."""
        while self._poisoned:
            with self._poison_lock:
                if not self._poisoned:
                    return
                job_id, (state, reason) = self._poisoned.popitem()
            try:
                self.transition(
                    job_id,
                    JobState.FAILED,
                    self.clock.now(),
                    kind="quarantined",
                    message=reason,
                    expect=state,
                )
                log.error("job %s quarantined: %s", job_id, reason)
            except Exception:  # one job must never stop the caller's read
                log.exception("could not quarantine job %s", job_id)

    def add_listener(self, listener: EventListener) -> None:
        """Call `listener` with every event after it is committed (from the writer's thread)."""
        self._listeners.append(listener)

    def _publish(self, events: Sequence[JobEvent]) -> None:
        for event in events:
            for listener in self._listeners:
                listener(event)

    @abc.abstractmethod
    def submit(self, tenant: TenantId, items: Sequence[Submission], now: datetime) -> list[tuple[Job, bool]]:
        """Store all items atomically; an item whose client_id exists returns that job, False."""

    @abc.abstractmethod
    def jobs_by_client_id(self, tenant: TenantId, client_ids: Sequence[str]) -> dict[str, Job]:
        """The tenant's stored jobs whose client_id is one of `client_ids`, by client_id."""

    def submit_many(
        self, groups: Sequence[tuple[TenantId, Sequence[Submission]]], now: datetime
    ) -> list[list[tuple[Job, bool]]]:
        """Several tenants' submissions at once (group commit); stores may do it in one transaction."""
        return [self.submit(tenant, items, now) for tenant, items in groups]

    @abc.abstractmethod
    def get(self, job_id: str, tenant: TenantId | None = None) -> Job:
        """The job; JobNotFoundError when missing or owned by another tenant."""

    @abc.abstractmethod
    def list_jobs(
        self,
        tenant: TenantId | None,
        *,
        states: Sequence[JobState] = (),
        labels: Mapping[str, str] | None = None,
        page_size: int = 100,
        page_token: str = "",
    ) -> JobPage:
        """Jobs oldest first, filtered; `next_page_token` is empty on the last page."""

    @abc.abstractmethod
    def transition(
        self,
        job_id: JobId,
        new_state: JobState,
        now: datetime,
        *,
        kind: str = "state",
        message: str = "",
        data: Mapping[str, Any] | None = None,
        expect: JobState | None = None,
        **fields: Any,
    ) -> Job:
        """Move the job (state machine checked), set `fields`, append one event, atomically.

        With `expect`, the move only happens when the job is still in that state; otherwise
        the current job is returned unchanged (used to lose races gracefully, e.g. cancel).
        """

    @abc.abstractmethod
    def record(
        self,
        job_id: JobId,
        now: datetime,
        *,
        kind: str,
        message: str = "",
        data: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> Job:
        """Append an event without changing state (and set `fields`)."""

    @abc.abstractmethod
    def record_many(
        self, entries: Sequence[tuple[JobId, str, str, Mapping[str, Any]]], now: datetime
    ) -> None:
        """Append one event (job, kind, message, data) per entry, in one transaction; each job's
        `message` becomes its entry's (the latest word on why a queued job waits, `szb list`)."""

    @abc.abstractmethod
    def events_after(self, job_id: JobId, after_seq: int, limit: int = 1000) -> list[JobEvent]:
        """Events with seq > after_seq, in order."""

    def run_times(self, job_ids: Sequence[JobId]) -> dict[JobId, tuple[datetime | None, datetime | None]]:
        """Per job: when it first ran (its first RUNNING event) and when it ended (its last
        terminal event); None where it has not. Stores answer for a whole page in one query."""
        out: dict[JobId, tuple[datetime | None, datetime | None]] = {}
        for job_id in job_ids:
            events = self.events_after(job_id, 0)
            started = next((e.time for e in events if e.state == JobState.RUNNING), None)
            ended = next((e.time for e in reversed(events) if e.state.terminal), None)
            out[job_id] = (started, ended)
        return out

    @abc.abstractmethod
    def jobs_in_states(self, states: Sequence[JobState], limit: int = 10_000) -> list[Job]:
        """Jobs in any of `states`, oldest first (served by an index on state)."""

    @abc.abstractmethod
    def queued_up_to(self, limit: int) -> int:
        """How many jobs are queued, counting no further than `limit` (an index range, no rows read)."""
    @abc.abstractmethod
    def queued_tenants(self) -> list[TenantId]:
        """The tenants with queued jobs, sorted (one index probe per tenant, not per job)."""
    @abc.abstractmethod
    def queue_groups(self, tenant: TenantId, limit: int) -> list[str]:
        """A tenant's first `limit` queue groups (`_queue_keys`) with queued jobs; '' holds unkeyed rows."""

    @abc.abstractmethod
    def group_heads(self, tenant: TenantId, groups: Sequence[str]) -> dict[str, tuple[int, str]]:
        """Each group's first queued job as (priority rank, id): which group's head comes first."""

    @abc.abstractmethod
    def fill_queue_keys(self, tenant: TenantId, limit: int) -> int:
        """Rank and group up to `limit` of a tenant's queued jobs an older broker stored unkeyed."""

    @abc.abstractmethod
    def queue_head(self, tenant: TenantId, group: str, page_size: int, page_token: str = "") -> JobPage:
        """A tenant's queued jobs of one group in its own order: highest priority, then oldest first."""

    @abc.abstractmethod
    def count_by_state(self, tenant: TenantId | None = None) -> dict[JobState, int]:
        """How many jobs are in each state (of one tenant, or of everyone)."""

    @abc.abstractmethod
    def count_unfinished(self, tenant: TenantId) -> int:
        """How many of the tenant's jobs are not yet finished (served by an index)."""

    # Attempts -----------------------------------------------------------------------------

    @abc.abstractmethod
    def create_attempt(
        self,
        job_id: JobId,
        site: SiteId,
        offer: Offer,
        token: str,
        now: datetime,
        *,
        secret_hash: str = "",
    ) -> Attempt:
        """Record the intent to try `offer` before any backend call (write before you act)."""

    @abc.abstractmethod
    def update_attempt(
        self,
        attempt_id: AttemptId,
        now: datetime,
        *,
        state: AttemptState | None = None,
        backend_id: str | None = None,
        error: str | None = None,
        secret_hash: str | None = None,
        moves: Sequence[JobMove] = (),
    ) -> Attempt:
        """Set what the backend told us about the attempt, and move its job, atomically.

        A terminal attempt keeps its state: a `state` update of one is ignored, the stored
        attempt is returned unchanged and `moves` are not applied (a late poll or a reconciler
        must never rewrite a result). `moves` apply in order, each event at its move's `at`
        (else `now`), never before the job's previous event.
        """

    @abc.abstractmethod
    def get_attempt(self, attempt_id: str) -> Attempt:
        """The attempt; StoreError when missing."""

    @abc.abstractmethod
    def attempts_for(self, job_id: JobId) -> list[Attempt]:
        """A job's attempts, first first."""

    @abc.abstractmethod
    def live_attempts(self) -> list[Attempt]:
        """Attempts still PENDING or RUNNING at their backend."""

    @abc.abstractmethod
    def run_starts(self, job_ids: Sequence[JobId]) -> dict[JobId, datetime]:
        """Per job: when its latest run began (its last move to RUNNING); absent if it never ran."""

    @abc.abstractmethod
    def launch_times(self, site: SiteId, limit: int) -> list[float]:
        """Seconds from each of the site's newest `limit` attempts' creation to its job's move to
        RUNNING on it, oldest first (attempts whose job never ran on them left out)."""

    @abc.abstractmethod
    def attempt_times(
        self, sites: Sequence[SiteId], since: datetime, tenant: TenantId | None = None
    ) -> list[datetime]:
        """When each attempt at `sites` created at or after `since` and started there (it has a
        backend id: a launch the site refused is no burst) was created, oldest first (only those
        of `tenant`'s jobs if given)."""

    @abc.abstractmethod
    def recent_runtimes(self, tenant: TenantId, limit: int) -> list[tuple[float, float]]:
        """(runtime estimate, actual run) seconds of the tenant's newest `limit` succeeded jobs,
        newest first; bounded by `limit` however long the history."""

    # Money --------------------------------------------------------------------------------
    @abc.abstractmethod
    def reserve_spend(
        self,
        entry: SpendEntry,
        *,
        tenant_limit: float | None,
        global_limit: float | None,
        voucher_balances: Mapping[str, float] | None = None,
    ) -> bool:
        """Insert `entry` only if the tenant's and everyone's totals stay within limits in each month
        its run touches (each entry counted for its part there, `SpendEntry.in_month`).
        The check and the insert are one transaction, so concurrent bursts cannot overspend.
        Totals count cash only (spent + reserved, not voucher-paid amounts). With `voucher_balances`,
        each voucher's draw (`SpendEntry.voucher_draws`) is capped at what the tenant's other
        entries (open reservations included) left of it, the rest added to its cash first."""

    @abc.abstractmethod
    def settle_spend(
        self, attempt_id: AttemptId, spent: float, voucher: float, draws: Draws | None = None,
        ended: datetime | None = None,
    ) -> None:
        """Turn an attempt's reservation into actual spend: `voucher` paid by vouchers as `draws`
        (None: all by the first), its run ended at `ended` (None: as reserved; `in_month`)."""

    @abc.abstractmethod
    def raise_reservations(
        self, costs: Sequence[tuple[AttemptId, float, float]], split: SplitCost, now: datetime | None = None
    ) -> None:
        """Raise open reservations to what their attempts have cost so far (their runs to `now`).
        Each item is (attempt, cost so far in its offer's currency, the rate for an entry reserved
        without one); in one transaction `split` gives each open entry's (cash, voucher draws) of it,
        taken where either grows (cash never lowered). Settled entries are left as they are."""

    @abc.abstractmethod
    def spend_entries(self, month: str, tenant: TenantId | None = None) -> list[SpendEntry]:
        """Entries whose money counts in this month, in part (`SpendEntry.in_month`); None: all tenants."""

    @abc.abstractmethod
    def unsettled_spend(self) -> list[SpendEntry]:
        """Entries not settled yet, of every month and tenant (live attempts' reservations, and any
        whose settlement a crash cut short)."""

    @abc.abstractmethod
    def voucher_used(self, tenant: TenantId) -> dict[str, float]:
        """Voucher id -> what the tenant's attempts of every month drew from it (reserved or settled)."""

    # Leadership and fencing (the election itself lives in broker/ha) ----------------------

    @abc.abstractmethod
    def claim_leadership(
        self, holder: str, backend_pid: int | None, lease_s: float, now: datetime, *,
        lock_wait_s: float | None = None,
    ) -> int:
        """Bump the epoch and record the holder and its lease; the new epoch (caller holds the lock).
        LeaseBlocked when fenced writes held the row for more than `lock_wait_s` (None: wait)."""

    @abc.abstractmethod
    def renew_leadership(self, holder: str, epoch: int, lease_s: float, now: datetime) -> bool:
        """Extend the lease iff `epoch` (held by `holder`) is still the current one."""

    @abc.abstractmethod
    def leadership(self) -> LeaseRow | None:
        """The current lease; None while nobody ever claimed."""

    @abc.abstractmethod
    def set_fence(self, epoch: int | None) -> None:
        """Refuse (FencedOut) every scheduler write from now on unless the epoch is still `epoch`."""

    @abc.abstractmethod
    def publish_site_report(self, body: str, now: datetime) -> None:
        """Replace the active scheduler's report on its sites (a fenced scheduler write)."""

    @abc.abstractmethod
    def site_report(self) -> tuple[str, datetime] | None:
        """The last report published and when; None while no scheduler published one."""

    @abc.abstractmethod
    def broker_id(self) -> str:
        """The id this store's broker tags its cloud instances and Slurm jobs with (made at first use)."""

    @abc.abstractmethod
    def save_fair_usage(self, usage: FairUsage) -> None:
        """Replace the decayed on-prem usage of finished work (one row per tenant)."""

    @abc.abstractmethod
    def load_fair_usage(self) -> FairUsage | None:
        """The decayed usage last saved, or None when none was."""

    @abc.abstractmethod
    def save_reclaim_state(self, state: ReclaimState) -> None:
        """Replace reclaim's waste budget and its bookings of preempted units in one transaction."""

    @abc.abstractmethod
    def load_reclaim_state(self) -> ReclaimState:
        """The state last saved (none: every bucket full, nothing booked)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections."""
