"""The store contract: jobs, attempts and an append-only event log per job.

Every implementation enforces the state machine inside the same transaction that writes the
new state and its event, so a job's state and its audit log never disagree.
"""

from __future__ import annotations

import abc
import json
import logging
import re
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

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
from broker.store._audit import AuditFilter, PolicyVersion

EventListener = Callable[[JobEvent], None]

log = logging.getLogger(__name__)

UNREADABLE_SPEC = "unreadable spec"
"""The reason a job is quarantined with when its stored spec no longer validates."""

UNFINISHED = (
    JobState.QUEUED,
    JobState.PLACING,
    JobState.PROVISIONING,
    JobState.RUNNING,
    JobState.PREEMPTED,
)
"""States a tenant's `max_queued_jobs` quota counts."""

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class StoreError(Exception):
    """Root of store errors."""


class JobNotFoundError(StoreError):
    """No such job (or not visible to the asking tenant)."""


@dataclass(frozen=True)
class Submission:
    """One job to store; `client_id` makes the submission retry-safe per tenant."""

    spec: JobSpec
    client_id: str | None = None


@dataclass(frozen=True)
class JobPage:
    jobs: list[Job]
    next_page_token: str


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
    settled: bool = False


class JobIds:
    """Time-ordered ids (ms clock, a counter within the ms, randomness): listing by id is by age."""

    def __init__(self) -> None:
        self._last_ms = 0
        self._seq = 0
        self._lock = threading.Lock()

    def next(self, now: datetime) -> JobId:
        with self._lock:
            ms = max(int(now.timestamp() * 1000), self._last_ms)
            self._seq = self._seq + 1 if ms == self._last_ms else 0
            self._last_ms = ms
            return JobId(f"j-{ms:011x}{self._seq:04x}{secrets.token_hex(3)}")


def attempt_from_row(r: Sequence[Any], to_datetime: Callable[[Any], datetime]) -> Attempt:
    """An attempt from its row (column order of both stores); times converted by `to_datetime`."""
    return Attempt(
        id=AttemptId(r[0]),
        job_id=JobId(r[1]),
        number=r[2],
        site=SiteId(r[3]),
        offer=Offer.model_validate_json(r[4]),
        token=r[5],
        state=AttemptState(r[6]),
        backend_id=r[7],
        created_at=to_datetime(r[8]),
        updated_at=to_datetime(r[9]),
        error=r[10],
        secret_hash=r[11] or "",
    )


def attempt_updates(
    state: AttemptState | None, backend_id: str | None, error: str | None, secret_hash: str | None = None
) -> list[tuple[str, str]]:
    """The (column, value) pairs an `update_attempt` call sets besides `updated_at`."""
    values = (
        ("state", state.value if state else None),
        ("backend_id", backend_id),
        ("error", error),
        ("secret_hash", secret_hash),
    )
    return [(col, value) for col, value in values if value is not None]


LIVE_ATTEMPT_STATES = (AttemptState.PENDING.value, AttemptState.RUNNING.value)
"""An attempt's state may only change from one of these: a terminal attempt is never rewritten."""


def placeholder_spec(text: str) -> JobSpec:
    """A stand-in for a spec that no longer validates: its name when readable, nothing to run."""
    name = "unreadable"
    try:
        raw = json.loads(text)
        if isinstance(raw, dict) and isinstance(raw.get("name"), str) and _NAME.match(raw["name"]):
            name = raw["name"]
    except ValueError:
        pass
    return JobSpec(name=name, command=("false",), runtime_estimate=timedelta(seconds=1))


def read_spec(text: str) -> JobSpec | str:
    """The stored spec, or why it cannot be read (a row written by an older or buggy broker)."""
    try:
        return JobSpec.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": str(exc)}
        where = ".".join(str(p) for p in first["loc"])
        return f"{UNREADABLE_SPEC}: {where + ': ' if where else ''}{first['msg']}"
    except ValueError as exc:
        return f"{UNREADABLE_SPEC}: {exc}"


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


def new_attempt_id(job_id: JobId, number: int) -> AttemptId:
    return AttemptId(f"{job_id}-a{number}")


# Fields of a Job that callers may set alongside a transition or on their own.
JOB_FIELDS = frozenset({"site", "exit_code", "log_tail", "message", "policy_hash", "attempts"})


class JobStore(abc.ABC):
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
        """Append one event (job, kind, message, data) per entry, in one transaction.

        Each job's `message` becomes its entry's message: the latest word on a job whose state
        does not move (why a queued job still waits), shown by `szb list`.
        """

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
        must never rewrite a result).
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

    # Money --------------------------------------------------------------------------------

    @abc.abstractmethod
    def reserve_spend(
        self, entry: SpendEntry, *, tenant_limit: float | None, global_limit: float | None
    ) -> bool:
        """Insert `entry` only if the tenant's and everyone's month totals stay within limits.

        The check and the insert are one transaction, so concurrent bursts cannot overspend.
        Totals count cash only (spent + reserved, not voucher-paid amounts).
        """

    @abc.abstractmethod
    def settle_spend(self, attempt_id: AttemptId, spent: float, voucher: float) -> None:
        """Turn an attempt's reservation into actual spend."""

    @abc.abstractmethod
    def spend_entries(self, month: str, tenant: TenantId | None = None) -> list[SpendEntry]:
        """This month's entries (all tenants when None)."""

    # Audit trail and operator views -------------------------------------------------------

    @abc.abstractmethod
    def record_policy_version(self, version: PolicyVersion) -> None:
        """Append a policy file the broker loaded or refused (never updated, never deleted)."""

    @abc.abstractmethod
    def policy_versions(self, limit: int = 50) -> list[PolicyVersion]:
        """The newest policy loads and refusals first."""

    @abc.abstractmethod
    def find_policy_version(self, hash_prefix: str) -> PolicyVersion | None:
        """The newest stored version whose hash starts with `hash_prefix` (loaded ones first)."""

    @abc.abstractmethod
    def audit_events(self, where: AuditFilter) -> list[tuple[TenantId, JobEvent]]:
        """Submissions, cancellations and decisions matching `where`, oldest first (the newest
        `where.limit` of them)."""

    @abc.abstractmethod
    def active_counts(self) -> dict[tuple[str, str, str], int]:
        """(state, site or '', tenant) -> how many unfinished jobs (for the queue-depth metric)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections."""
