"""The submit path: validate → admit against a cached snapshot → insert → ack.

It never waits on the decision loop: admission reads the policy in force and the tenant's
quotas (cached per policy), the store insert runs off the event loop in one short
transaction shared by every submit that arrives meanwhile (group commit), and the
dispatcher is only told that jobs arrived once they are durable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, NoReturn

from pydantic import ValidationError

from broker.api import broker_service_pb2 as pb
from broker.api import job_pb2
from broker.clock import Clock
from broker.errors import BrokerError
from broker.jobspec import identifier_problem, submission_problems
from broker.jobview import JobDetails
from broker.model import Job, JobSpec, TenantId
from broker.quota import Quotas, QuotaUsage
from broker.refusals import call_refusals
from broker.serde import WireValueError, checked_known_fields, job_to_proto, spec_from_proto, within_answer
from broker.store import JobStore, Submission
from broker.validation import BadRequestError, FieldViolation, violations

log = logging.getLogger(__name__)

MAX_BATCH = 10_000
MAX_CLIENT_ID = 128
UNFINISHED_CACHE = timedelta(seconds=1)

AdmitFn = Callable[[JobSpec, TenantId, datetime], Sequence[str]]
"""Reasons a job can never be placed for this tenant (empty when it can)."""

GrantFn = Callable[[JobSpec, TenantId], str | None]
"""Why the tenant may not declare the job's priority (None when it may)."""

VetFn = Callable[[JobSpec], Sequence[FieldViolation]]
"""Problems of a well-formed spec against the running policy (e.g. an unknown accelerator)."""

DescribeFn = Callable[[Sequence[Job]], list[JobDetails]]
Results = list[tuple[Job, bool]]
Who = tuple[str, str]
"""(token name, role) of who submits; ("", "") when the token has no name."""
Refused = list[tuple[int, Submission, Sequence[str]]]
"""Items refused by policy: (index in the call, item, reasons)."""


class NotPlaceableError(BrokerError):
    """No offer could ever be allowed for the job: no job is stored (the audit trail keeps the
    refusal, `refused_submissions`)."""

    def __init__(self, index: int, reasons: Sequence[str]) -> None:
        super().__init__("; ".join(reasons))
        self.index = index
        self.reasons = list(reasons)


class PriorityNotGrantedError(BrokerError):
    """The job declares a priority class its tenant was not granted: nothing is stored."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(reason)
        self.index = index
        self.reason = reason


def wire_spec(msg: job_pb2.JobSpec, prefix: str, vet: VetFn | None = None) -> JobSpec:
    """The domain spec of a wire spec; BadRequestError naming each bad field under `prefix`."""
    try:
        spec = spec_from_proto(checked_known_fields(msg))
    except ValidationError as exc:
        raise BadRequestError(violations(exc, prefix, model=JobSpec)) from exc
    except WireValueError as exc:
        raise BadRequestError([FieldViolation(_under(prefix, exc.field), exc.description)]) from exc
    problems = [FieldViolation(".".join(loc), why) for loc, why in submission_problems(spec)]
    problems += vet(spec) if vet is not None else ()
    if problems:
        raise BadRequestError([FieldViolation(_under(prefix, p.field), p.description) for p in problems])
    return spec


def _under(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and name else prefix or name


def _client_id(value: str, field: str) -> str | None:
    """The idempotency key as stored; `szb get`, listings and errors print it back."""
    if len(value) > MAX_CLIENT_ID:
        raise BadRequestError([FieldViolation(field, f"must be at most {MAX_CLIENT_ID} characters")])
    problem = identifier_problem(value)  # control, invisible and bidi characters; end spaces
    if problem is not None:
        raise BadRequestError([FieldViolation(field, problem)])
    return value or None


def _client_id_clashes(request: pb.SubmitJobsRequest) -> list[FieldViolation]:
    """Entries of one batch that give an earlier entry's client_id with another job: one of the
    two would be dropped without a word (the same job twice is one job, answered twice)."""
    first: dict[str, int] = {}
    out = []
    for i, r in enumerate(request.requests):
        if not r.client_id:
            continue
        j = first.setdefault(r.client_id, i)
        if j != i and request.requests[j].job != r.job:
            out.append(FieldViolation(f"requests[{i}].client_id",
                                      f"is requests[{j}]'s, with another job: a client_id names one job"))
    return out


def _echo(spec: job_pb2.JobSpec) -> job_pb2.JobSpec | None:
    """The wire spec to answer with, when it is what was stored (a finer deadline is refused)."""
    return spec if spec.deadline.nanos % 1000 == 0 else None


@dataclass
class SubmitPath:
    """SubmitJob and SubmitJobs from wire message to durable, acknowledged jobs."""

    store: JobStore
    clock: Clock
    admit: AdmitFn | None = None
    grant: GrantFn | None = None
    quotas: Quotas | None = None
    describe: DescribeFn | None = None
    on_created: Callable[[Job], None] | None = None
    """Told of each new job once it is durable (the dispatcher's wake-up in one process)."""
    policy_version: Callable[[], str] | None = None
    """The version of the policy in force (`Policy.version`): vetting answers are kept per
    version (None: not kept)."""
    commit_inline: bool = False
    """Commit on the event loop (an embedded SQLite file: a commit is a fraction of a
    millisecond, less than handing it to a thread under a busy GIL); else in a writer thread
    (a database server: the loop keeps serving while the commit travels)."""
    _vetted: dict[tuple[str, tuple[str, ...]], list[FieldViolation]] = field(default_factory=dict)
    _pending: list[tuple[TenantId, Sequence[Submission], asyncio.Future[Results]]] = field(
        default_factory=list
    )
    _committing: bool = False
    _uncommitted: dict[TenantId, int] = field(default_factory=dict)
    """Jobs per tenant accepted but not yet committed: they count against max_queued_jobs."""
    _unfinished: dict[TenantId, tuple[datetime, int]] = field(default_factory=dict)
    """Each tenant's unfinished-job count as last read (when, how many), plus what it
    submitted since: a flood of submits costs one count query per second, not one each."""
    _writer: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="submit-commit")
    )

    # The wire side -----------------------------------------------------------------------

    async def submit_job(
        self, tenant: TenantId, request: pb.SubmitJobRequest, vet: VetFn | None = None, *, by: Who = ("", "")
    ) -> pb.SubmitJobResponse:
        """One job: every problem names its field; nothing is stored unless it is accepted.

        `by`: the caller's token name and role, recorded for the audit trail."""
        self.check_spec_bytes(tenant, request.job.ByteSize(), "job")
        item = Submission(
            spec=wire_spec(request.job, "", self._cached(vet)),
            client_id=_client_id(request.client_id, "client_id"),
            by=by[0],
            role=by[1],
        )
        try:
            [(job, created)] = await self.submit(tenant, [item])
        except PriorityNotGrantedError as exc:
            raise BadRequestError([FieldViolation("priority", exc.reason)]) from exc
        # The stored deadline keeps microseconds: echo the wire spec only when it is exact.
        spec = _echo(request.job) if created else None
        msg = within_answer(job_to_proto(job, spec, self._details([job])[0]))
        return pb.SubmitJobResponse(job=msg, created=created)

    async def submit_jobs(
        self, tenant: TenantId, request: pb.SubmitJobsRequest, vet: VetFn | None = None, *, by: Who = ("", "")
    ) -> pb.SubmitJobsResponse:
        """A batch, all or nothing: every bad job is named (`requests[i].job.<field>`)."""
        if len(request.requests) > MAX_BATCH:
            raise BadRequestError([FieldViolation("requests", f"at most {MAX_BATCH} jobs per call")])
        for i, r in enumerate(request.requests):
            self.check_spec_bytes(tenant, r.job.ByteSize(), f"requests[{i}].job")
        items: list[Submission] = []
        problems: list[FieldViolation] = []
        vet = self._cached(vet)
        for i, r in enumerate(request.requests):
            try:
                items.append(
                    Submission(
                        spec=wire_spec(r.job, f"requests[{i}].job", vet),
                        client_id=_client_id(r.client_id, f"requests[{i}].client_id"),
                        by=by[0],
                        role=by[1],
                    )
                )
            except BadRequestError as bad:
                problems.extend(bad.items)
        problems += _client_id_clashes(request)
        if problems:
            raise BadRequestError(problems)
        try:
            results = await self.submit(tenant, items)
        except PriorityNotGrantedError as exc:
            field_name = f"requests[{exc.index}].job.priority"
            raise BadRequestError([FieldViolation(field_name, exc.reason)]) from exc
        details = self._details([j for j, _ in results])
        answer, size = pb.SubmitJobsResponse(), 0
        for (j, c), r, d in zip(results, request.requests, details, strict=True):
            # Stored already: the answer must reach the client (GetJob has the specs left out).
            msg = within_answer(job_to_proto(j, _echo(r.job) if c else None, d), size)
            size += msg.ByteSize()
            answer.responses.append(pb.SubmitJobResponse(job=msg, created=c))
        return answer

    def _cached(self, vet: VetFn | None) -> VetFn | None:
        """`vet` remembered per (policy, accelerator names): it reads nothing else of a spec."""
        if vet is None or self.policy_version is None:
            return vet
        version = self.policy_version()

        def cached(spec: JobSpec) -> Sequence[FieldViolation]:
            key = (version, spec.resources.accelerators.any_of)
            found = self._vetted.get(key)
            if found is None:
                if len(self._vetted) > 4096:
                    self._vetted.clear()
                found = self._vetted[key] = list(vet(spec))
            return found

        return cached

    def _details(self, jobs: Sequence[Job]) -> Sequence[JobDetails | None]:
        return self.describe(jobs) if self.describe is not None else [None] * len(jobs)

    # Admission ---------------------------------------------------------------------------

    def check_spec_bytes(self, tenant: TenantId, size: int, field: str) -> None:
        """QuotaExceededError when one encoded spec is over the tenant's max_spec_bytes."""
        if self.quotas is not None:
            self.quotas.check_spec_bytes(tenant, size, field)

    def _unfinished_jobs(self, tenant: TenantId, *, fresh: bool = False) -> int:
        now = self.clock.now()
        cached = self._unfinished.get(tenant)
        if fresh or cached is None or not timedelta(0) <= now - cached[0] <= UNFINISHED_CACHE:
            cached = self._unfinished[tenant] = (now, self.store.count_unfinished(tenant))
        return cached[1]

    def _stored_already(self, tenant: TenantId, items: Sequence[Submission]) -> dict[int, Job]:
        """The items (by index) whose client_id names a job the tenant has stored."""
        ids = [item.client_id for item in items if item.client_id]
        if not ids:
            return {}
        found = self.store.jobs_by_client_id(tenant, ids)
        return {i: found[item.client_id] for i, item in enumerate(items) if item.client_id in found}

    def _admit_quota(self, tenant: TenantId, items: Sequence[Submission], new: int) -> None:
        """Each item's shape against the tenant's limits, and `new` more jobs against its counts."""
        if self.quotas is None:
            return
        for index, item in enumerate(items):
            self.quotas.check_spec(tenant, item.spec, f"requests[{index}].job" if len(items) > 1 else "job")
        # A count cached up to 1 s; near the limit the store's, with other API replicas' new jobs.
        near = self._unfinished_jobs(tenant) + new > self.quotas.limits_for(tenant).max_queued_jobs // 2
        unfinished = self._unfinished_jobs(tenant, fresh=near) + self._uncommitted.get(tenant, 0)
        self.quotas.admit(tenant, new, unfinished)

    def _admit_policy(self, tenant: TenantId, items: Sequence[Submission], now: datetime) -> Refused:
        """The items no offer could ever take, each with its reasons (every one: each is audited)."""
        if self.grant is not None:
            refusals: dict[object, str | None] = {}  # a batch asks about a few priorities only
            for index, item in enumerate(items):
                priority = item.spec.priority
                if priority not in refusals:
                    refusals[priority] = self.grant(item.spec, tenant)
                if refusals[priority] is not None:
                    raise PriorityNotGrantedError(index, str(refusals[priority]))
        if self.admit is None:
            return []
        found = ((index, item, self.admit(item.spec, tenant, now)) for index, item in enumerate(items))
        return [(index, item, reasons) for index, item, reasons in found if reasons]

    async def _refuse(
        self, tenant: TenantId, refused: Refused, items: Sequence[Submission], stored: Collection[int],
        now: datetime,
    ) -> NoReturn:
        """Log and audit the call's items (`call_refusals`), then refuse the call (naming the first).
        A store error while recording is logged, never raised: the caller gets its refusal."""
        version = self.policy_version() if self.policy_version is not None else ""
        records = call_refusals(tenant, refused, items, version, now, stored)
        try:
            if self.commit_inline:
                self.store.record_refusals(records)
            else:  # behind the commits already queued, off the event loop
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self._writer, self.store.record_refusals, records)
        except Exception as exc:
            log.error(
                "%d refused submission(s) could not be kept in the audit trail: %s",
                len(records),
                exc,
                extra={"event": "rejected", "tenant": tenant, "error": type(exc).__name__},
            )
        index, _, reasons = refused[0]
        raise NotPlaceableError(index, reasons)

    def quota_usage(self, tenant: TenantId) -> QuotaUsage | None:
        """The caller's limits and what it uses now; None without quotas."""
        if self.quotas is None:
            return None
        fresh = self.store.count_unfinished(tenant)
        self._unfinished[tenant] = (self.clock.now(), fresh)
        return self.quotas.usage(tenant, fresh)

    # Insert and ack ----------------------------------------------------------------------

    async def submit(self, tenant: TenantId, items: Sequence[Submission]) -> Results:
        """Check every item can be placed, then store them all in one transaction.

        Submissions arriving together from many callers share one commit (group commit): each
        caller waits for the commit that holds its jobs, so an answered submit is durable.
        """
        # A resend of stored jobs (a lost answer, STORE_UNAVAILABLE) gets them back as they are:
        # no quota, rate or policy check may refuse what was accepted already.
        known = await asyncio.to_thread(self._stored_already, tenant, items)
        if len(known) == len(items):
            return [(job, False) for job in known.values()]
        self._admit_quota(tenant, items, len(items) - len(known))
        now = self.clock.now()
        refused = self._admit_policy(tenant, items, now)
        if refused:
            await self._refuse(tenant, refused, items, known, now)
        if self.policy_version is not None:  # the audit trail names the policy that admitted them
            stamp = self.policy_version().split(":", 1)[0]
            items = [replace(item, policy_hash=stamp) for item in items]
        done: asyncio.Future[Results] = asyncio.get_running_loop().create_future()
        self._pending.append((tenant, items, done))
        self._uncommitted[tenant] = self._uncommitted.get(tenant, 0) + len(items)
        self._kick()
        try:
            results = await done
        finally:
            left = self._uncommitted.get(tenant, 0) - len(items)
            if left > 0:
                self._uncommitted[tenant] = left
            else:
                self._uncommitted.pop(tenant, None)
        created = [job for job, was_created in results if was_created]
        cached = self._unfinished.get(tenant)
        if cached is not None and created:
            self._unfinished[tenant] = (cached[0], cached[1] + len(created))
        if self.on_created is not None:
            for job in created:
                self.on_created(job)
        return results

    def _kick(self) -> None:
        """Start a commit of everything pending, unless one is running (it starts the next)."""
        if self._committing or not self._pending:
            return
        self._committing = True
        loop = asyncio.get_running_loop()
        if self.commit_inline:
            loop.call_soon(self._commit_here)  # after the submits already queued on the loop
            return
        pending, self._pending = self._pending, []
        groups = [(tenant, items) for tenant, items, _ in pending]
        work = loop.run_in_executor(self._writer, self.store.submit_many, groups, self.clock.now())
        work.add_done_callback(lambda f: self._committed(pending, f))

    def _commit_here(self) -> None:
        pending, self._pending = self._pending, []
        work: asyncio.Future[list[Results]] = asyncio.get_running_loop().create_future()
        try:
            work.set_result(self.store.submit_many([(t, items) for t, items, _ in pending], self.clock.now()))
        except Exception as exc:  # every caller of this commit gets it
            work.set_exception(exc)
        self._committed(pending, work)

    def _committed(self, pending: list[Any], work: asyncio.Future[list[Results]]) -> None:
        self._committing = False
        exc = work.exception()
        for index, (_, _, done) in enumerate(pending):
            if done.done():
                continue
            if exc is not None:
                done.set_exception(exc)
            else:
                done.set_result(work.result()[index])
        self._kick()

    def close(self) -> None:
        self._writer.shutdown(wait=True)
