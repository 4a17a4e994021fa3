"""The store contract's audit trail and operator views (a part of `JobStore`)."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from datetime import datetime

from broker.model import Job, JobEvent, JobId, TenantId
from broker.store._audit import KEEP_REFUSALS, AuditFilter, PolicyVersion, RefusedSubmission, TokenSet
from broker.store._cancels import CancelRequest
from broker.store._drains import DrainChange, SiteDrain
from broker.store._refused_actions import RefusedAction


class AuditStore(abc.ABC):
    """Policy versions, who did what to which job, submissions refused by policy, queue depth,
    cancels waiting for the scheduler."""

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
    def policy_hashes(self, hash_prefix: str, limit: int) -> list[str]:
        """Distinct stored hashes starting with `hash_prefix`, at most `limit`, in order."""

    @abc.abstractmethod
    def audit_events(self, where: AuditFilter) -> list[tuple[TenantId, JobEvent]]:
        """Submissions, cancellations and decisions matching `where`, oldest first (the newest
        `where.limit` of them)."""

    @abc.abstractmethod
    def record_refusals(self, refusals: Sequence[RefusedSubmission], keep: int = KEEP_REFUSALS) -> None:
        """Append submissions refused by policy (one transaction), then drop each tenant's older
        than its `keep` newest."""

    @abc.abstractmethod
    def refusals(self, where: AuditFilter) -> list[RefusedSubmission]:
        """Refused submissions matching `where`'s tenant and time, oldest first (the newest
        `where.limit`); none when it names a job (a refused submission never became one)."""

    @abc.abstractmethod
    def record_refused_action(self, action: RefusedAction) -> None:
        """Append an operator action the broker refused (never updated, never deleted)."""

    @abc.abstractmethod
    def refused_actions(self, where: AuditFilter) -> list[RefusedAction]:
        """Refused actions matching `where`'s tenant and time (its job: refused cancels of that
        id), oldest first (the newest `where.limit`)."""

    @abc.abstractmethod
    def record_token_set(self, tokens: TokenSet) -> None:
        """Append the tokens file put in force, unless the newest stored set is the same."""

    @abc.abstractmethod
    def token_sets(self, where: AuditFilter) -> list[TokenSet]:
        """Token sets in `where`'s time window and the one before it, oldest first (at most
        `MAX_TOKEN_SETS` + 1, the newest)."""

    @abc.abstractmethod
    def active_counts(self) -> dict[tuple[str, str, str], int]:
        """(state, site or '', tenant) -> how many unfinished jobs (for the queue-depth metric)."""

    @abc.abstractmethod
    def drain_site(self, drain: SiteDrain) -> SiteDrain | None:
        """Put `drain` in force (replacing the site's drain, if any) and log it, in one
        transaction; the drain it replaced, or None."""

    @abc.abstractmethod
    def undrain_site(self, site: str, by: str, time: datetime) -> SiteDrain | None:
        """Lift the site's drain and log who did (nothing when it is not drained); the drain
        lifted, or None."""

    @abc.abstractmethod
    def site_drains(self) -> list[SiteDrain]:
        """The drains in force, by site."""

    @abc.abstractmethod
    def drain_log(self, where: AuditFilter) -> list[DrainChange]:
        """Drains and undrains matching `where`'s time window, oldest first (the newest
        `where.limit`); none when it names a job or a tenant."""

    @abc.abstractmethod
    def request_cancel(self, request: CancelRequest, message: str) -> tuple[Job, bool]:
        """Record a cancel for the scheduler to settle, with a `cancel_requested` event and
        `message` as the job's, in one transaction; True when it is new (not when the job ended
        or a request is pending already)."""

    @abc.abstractmethod
    def cancel_request(self, job_id: JobId) -> CancelRequest | None:
        """The job's pending cancel request, if any."""

    @abc.abstractmethod
    def cancel_requests(self, limit: int = 1000) -> list[CancelRequest]:
        """Pending cancel requests, oldest first."""

    @abc.abstractmethod
    def drop_cancel_request(self, job_id: JobId) -> None:
        """The scheduler settled the job's cancel request (a fenced write)."""
