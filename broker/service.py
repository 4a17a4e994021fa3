"""Service functions behind the gRPC edge: domain types in, domain types out."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from broker.agent_secret import agent_secret_matches
from broker.auth import Principal
from broker.clock import Clock
from broker.dispatch.dispatcher import Dispatcher
from broker.dispatch.gang import is_gang_attempt, rank_exit
from broker.errors import BrokerError
from broker.joblogs import JobLogs, LogPiece
from broker.jobview import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, JobDetails
from broker.model import (
    Attempt,
    AttemptState,
    AttemptStatus,
    Job,
    JobEvent,
    JobId,
    JobState,
    TenantId,
    by_others,
)
from broker.quota import Quotas, QuotaUsage
from broker.refused_calls import RefusedCalls
from broker.store import JobNotFoundError, JobPage, JobStore, SqliteStore, StoreError, StoreUnavailable
from broker.submit import AdmitFn, GrantFn, SubmitPath
from broker.validation import FieldViolation, did_you_mean
from broker.waiting import within

log = logging.getLogger(__name__)
REFUSED_AGENT_EVERY_S = 60.0
"""At most one log line this often about agent calls refused for a wrong secret."""

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
AGENT_KINDS = frozenset({"started", "heartbeat", "alive", "exit"})


class AgentAuthError(BrokerError):
    """An agent report with an unknown attempt or the wrong secret: one answer for both."""

    def __init__(self) -> None:
        super().__init__("unauthenticated")


MAX_LOG_OFFSET = 2**63 - 1
"""The largest next offset an agent can be answered (`AppendLogResponse.next_offset` is an int64)."""
CANCEL_SETTLED_POLLS = 25
"""How long (x 0.2 s) a watch of a job that ended waits for the scheduler's word on its cancel."""


class AgentReportError(BrokerError):
    """An authenticated agent report with a bad value; nothing was changed."""

    def __init__(self, items: Sequence[FieldViolation]) -> None:
        super().__init__("; ".join(str(v) for v in items))
        self.items = list(items)


class PermissionDeniedError(BrokerError):
    """The caller's role does not allow this call (never used to hide a job: that is NOT_FOUND)."""


class JobNotQueuedError(BrokerError):
    """The call is for a queued job, and this one is not (it runs, or it ended)."""


class EventHub:
    """Wakes watchers when a job gets a new event; events themselves are read from the store."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._lock = threading.Lock()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def publish(self, event: JobEvent) -> None:
        self.wake(event.job_id)

    def wake(self, job_id: str) -> None:
        """Watchers of `job_id` re-read its events now (any thread; also for other processes' writes)."""
        with self._lock:
            waiters = list(self._waiters.get(job_id, ()))
        if not waiters or self._loop is None:
            return
        for waiter in waiters:
            self._loop.call_soon_threadsafe(waiter.set)

    def subscribe(self, job_id: str) -> asyncio.Event:
        ev = asyncio.Event()
        with self._lock:
            self._waiters.setdefault(job_id, set()).add(ev)
        return ev

    def unsubscribe(self, job_id: str, ev: asyncio.Event) -> None:
        with self._lock:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(ev)
                if not waiters:
                    del self._waiters[job_id]


@dataclass
class BrokerServices:
    store: JobStore
    dispatcher: Dispatcher
    clock: Clock
    hub: EventHub
    admit: AdmitFn | None = None
    grant: GrantFn | None = None
    joblogs: JobLogs | None = None
    describe: Callable[[Sequence[Job]], list[JobDetails]] | None = None
    """The client's view of a job beyond its row (placement, cost so far, start and end)."""
    quotas: Quotas | None = None
    policy_version: Callable[[], str] | None = None
    """The version of the policy in force, its referenced files included (`Policy.version`): the
    submit path keeps answers per version."""
    tenants: Callable[[], Sequence[str]] = lambda: ()
    """The tenants the policy in force declares (empty: not known)."""
    submitter: SubmitPath = field(init=False)
    """SubmitJob/SubmitJobs: validate, admit, insert, ack (see broker.submit)."""
    refused_calls: RefusedCalls = field(init=False)
    """Operator actions refused to the caller, for the audit trail."""
    refused_logged_at: float | None = None
    """When the last line about refused agent calls was logged (the clock's ticks: a wall-clock
    step must neither silence the lines nor let a flood through); an instance with a stale
    secret, or someone guessing, showed only later as a lost job."""
    refused_since: int = 0
    """Agent calls refused since that line."""

    def __post_init__(self) -> None:
        self.refused_calls = RefusedCalls(self.store, self.clock)
        self.submitter = SubmitPath(
            self.store,
            self.clock,
            admit=self.admit,
            grant=self.grant,
            quotas=self.quotas,
            describe=self.describe,
            on_created=self.dispatcher.job_submitted,
            policy_version=self.policy_version,
            commit_inline=isinstance(self.store, SqliteStore),
        )

    def quota_usage(self, tenant: TenantId) -> QuotaUsage | None:
        """The caller's limits and what it uses now; None without quotas."""
        return self.submitter.quota_usage(tenant)

    def details(self, job: Job) -> JobDetails | None:
        return self.describe([job])[0] if self.describe is not None else None

    def details_many(self, jobs: Sequence[Job]) -> list[JobDetails | None]:
        if self.describe is None:
            return [None] * len(jobs)
        return list(self.describe(jobs))

    def get(self, caller: Principal, job_id: str) -> Job:
        """The job; JobNotFoundError when missing or another tenant's (unless an operator asks)."""
        return self._with_standing(self.store.get(job_id, None if caller.is_operator else caller.tenant))

    def _with_standing(self, job: Job) -> Job:
        """A queued job's message says where it stands in the fair-share order (live, not stored)."""
        if job.state != JobState.QUEUED:
            return job
        message = self.dispatcher.planner.standing(job.id, job.message)
        if message is None:
            return job
        # Why it waits (the dispatcher's latest reason) first, then where it stands.
        return job.model_copy(update={"message": message})

    def list(
        self,
        caller: Principal,
        *,
        states: Sequence[JobState],
        labels: Mapping[str, str],
        page_size: int,
        page_token: str,
        tenant: str = "",
    ) -> JobPage:
        """The caller's jobs; an operator sees every tenant's, or `tenant`'s when given; a tenant
        naming another is JobNotFoundError, as for any other tenant's thing."""
        if tenant and not caller.sees(tenant):  # as spend and offers answer: no name is confirmed
            raise JobNotFoundError(f"tenant {tenant!r} not found")
        owner = TenantId(tenant) if tenant else (None if caller.is_operator else caller.tenant)
        size = DEFAULT_PAGE_SIZE if page_size <= 0 else min(page_size, MAX_PAGE_SIZE)
        page = self.store.list_jobs(
            owner, states=states, labels=labels, page_size=size, page_token=page_token
        )
        declared = self.tenants()
        # A typo would read as a tenant with no jobs; one since removed keeps its jobs listed
        # (an empty page where none matches the filters).
        if (tenant and not page.jobs and not page_token and declared and tenant not in declared
                and not self.store.list_jobs(owner, page_size=1).jobs):
            hint = did_you_mean(tenant, list(declared))
            raise JobNotFoundError(f"tenant {tenant!r} is not in the policy and has no jobs{hint}")
        return replace(page, jobs=[self._with_standing(j) for j in page.jobs])

    async def cancel(self, caller: Principal, job_id: str) -> Job:
        """Cancel the job; the event records who asked and in which role."""
        try:
            job = self.get(caller, job_id)
        except JobNotFoundError:
            if not caller.is_operator:  # (an operator's NOT_FOUND is a typo, no refusal)
                self.refused_calls.cancel_refused(caller, job_id)
            raise
        done = await self.dispatcher.cancel(job, by=caller.who, role=caller.role.value)
        if not job.state.terminal:  # a cancel of a finished job changes nothing: no line
            log.info(
                "job %s (%s) %s by %s (%s) in state %s",
                job.id, job.spec.name, "cancelled" if done.state.terminal else "cancel requested",
                caller.who, caller.role.value, job.state.value,
                extra={"event": "cancelled", "job_id": job.id, "tenant": job.tenant, "by": caller.who},
            )
        return done

    async def watch(self, caller: Principal, job_id: str, after_seq: int) -> AsyncGenerator[JobEvent, None]:
        """Every event after `after_seq`, live, until the job is terminal (one stream slot held)."""
        job = self.get(caller, job_id)
        if self.quotas is None:
            async for event in self._watch(job, after_seq):
                yield event if caller.is_operator else by_others(event, job.tenant)
            return
        with self.quotas.watch_stream(caller.tenant):
            async for event in self._watch(job, after_seq):
                yield event if caller.is_operator else by_others(event, job.tenant)

    async def _watch(self, job: Job, after_seq: int) -> AsyncIterator[JobEvent]:
        ev = self.hub.subscribe(job.id)
        try:
            seq = after_seq
            while True:
                ev.clear()
                events = self.store.events_after(JobId(job.id), seq)
                for event in events:
                    seq = event.seq
                    yield event
                ended = bool(events) and events[-1].state.terminal and len(events) < 1000
                if ended or (not events and self.store.get(job.id).state.terminal):
                    for event in await self._cancel_settled(JobId(job.id), seq):
                        yield event
                    return
                if not events:
                    try:
                        await within(ev.wait(), 5.0)
                    except TimeoutError:
                        pass
        finally:
            self.hub.unsubscribe(job.id, ev)

    async def _cancel_settled(self, job_id: JobId, seq: int) -> Sequence[JobEvent]:
        """A job that ended while a cancel of it waited for the scheduler: the scheduler's word on
        that cancel (it came too late) follows the end; it is waited for a moment, then sent."""
        if not self.dispatcher.cancel_pending(job_id):
            return []  # (always, but on an API replica)
        for _ in range(CANCEL_SETTLED_POLLS):
            await asyncio.sleep(0.2)
            if not self.dispatcher.cancel_pending(job_id):
                return self.store.events_after(job_id, seq)
        return []

    async def logs(
        self, caller: Principal, job_id: str, *, follow: bool, tail_bytes: int
    ) -> AsyncGenerator[LogPiece, None]:
        """The job's output (its latest attempt's), live with `follow` until the job ends.

        A follow is as long-lived as a watch and polls the same way, so it holds a stream slot.
        """
        job = self.store.get(job_id, None if caller.is_operator else caller.tenant)
        if self.joblogs is None:
            return
        stream = self.joblogs.stream(job, follow=follow, tail_bytes=tail_bytes)
        if not follow or self.quotas is None:
            async for piece in stream:
                yield piece
            return
        with self.quotas.watch_stream(caller.tenant):
            async for piece in stream:
                yield piece

    def agent_log(self, attempt_id: str, token: str, offset: int, data: bytes) -> int:
        """A chunk of output from the bootstrap on an instance; returns the next offset to send."""
        attempt = self._agent_attempt(attempt_id, token)
        if offset + len(data) > MAX_LOG_OFFSET:  # the next offset would not fit the reply's int64
            too_far = f"must be at most {MAX_LOG_OFFSET} less the chunk's length"
            raise AgentReportError([FieldViolation("offset", too_far)])
        if self.joblogs is None:
            return offset + len(data)
        return self.joblogs.append(attempt, offset, data)

    def _agent_refused(self, attempt_id: str, *, known: bool) -> None:
        """Log a refused agent call: the first, then at most one line a minute with the count."""
        now, held, last = self.clock.ticks(), self.refused_since, self.refused_logged_at
        if last is not None and now - last < REFUSED_AGENT_EVERY_S:
            self.refused_since += 1
            return
        self.refused_logged_at, self.refused_since = now, 0
        whose = "its secret does not match" if known else "no such attempt"
        log.warning("agent call refused for attempt %r: %s (%d more refused since the last such line)",
                    attempt_id[:80], whose, held, extra={"event": "agent_refused"})

    def _agent_attempt(self, attempt_id: str, secret: str) -> Attempt:
        """The attempt whose agent secret this is; one AgentAuthError for any mismatch."""
        try:
            attempt: Attempt | None = self.store.get_attempt(attempt_id)
        except StoreUnavailable:
            raise  # (not "no such attempt": a refusal would make the agent give up its result)
        except (StoreError, UnicodeError):  # (JSON may carry a lone surrogate no store can encode)
            attempt = None
        # An unknown attempt is hashed and compared too: both failures cost the same.
        if not agent_secret_matches(secret, attempt.secret_hash if attempt else None):
            self._agent_refused(attempt_id, known=attempt is not None)
            raise AgentAuthError()
        assert attempt is not None
        return attempt

    def agent_report(
        self,
        attempt_id: str,
        secret: str,
        kind: str,
        exit_code: int | None,
        log_tail: str,
        rank: int | None = None,
    ) -> bool:
        """A report from the agent of one attempt; True when it should stop (job or attempt over).

        `kind` is `started`/`heartbeat`/`alive` (running) or `exit` (with its exit code). The
        attempt id and its agent secret are checked together, in constant time.
        """
        attempt = self._agent_attempt(attempt_id, secret)
        problems = []
        if kind not in AGENT_KINDS:
            problems.append(FieldViolation("kind", f"must be one of {', '.join(sorted(AGENT_KINDS))}"))
        if exit_code is not None and (
            isinstance(exit_code, bool) or not INT32_MIN <= exit_code <= INT32_MAX
        ):
            problems.append(FieldViolation("exit_code", "must be a 32-bit signed integer"))
        if kind == "exit" and rank is None and is_gang_attempt(attempt):
            # One node's exit without its rank would end the whole gang.
            problems.append(FieldViolation("rank", "required in the exit report of a gang's node"))
        # Only a report with a rank needs the job's spec: heartbeats stay one read.
        nodes = self.store.get(attempt.job_id).spec.resources.nodes if rank is not None else 1
        if rank is not None and not 0 <= rank < nodes:
            problems.append(FieldViolation("rank", f"must be 0 to {nodes - 1} for this job"))
        if problems:
            raise AgentReportError(problems)
        if attempt.state.terminal:
            # A superseded attempt (lost, preempted, ended) whose agent still runs: it must stop
            # even though its job goes on as another attempt, and its reports change nothing.
            return True
        if kind == "exit" and rank is not None and nodes > 1:
            # One node of a gang ended: the gang ends when all did, or at once when one failed.
            code = exit_code if exit_code is not None else 1
            self.dispatcher.heartbeat(attempt)
            gang = rank_exit(self.store, attempt, rank, code, log_tail, self.dispatcher.clock.now())
            self.dispatcher.apply_status(attempt, gang, by_agent=True)
        elif kind == "exit":
            code = exit_code if exit_code is not None else 1
            state = AttemptState.SUCCEEDED if code == 0 else AttemptState.FAILED
            self.dispatcher.apply_status(
                attempt, AttemptStatus(state=state, exit_code=code, log_tail=log_tail[-4096:]), by_agent=True
            )
        else:
            self.dispatcher.heartbeat(attempt)
            self.dispatcher.apply_status(attempt, AttemptStatus(state=AttemptState.RUNNING))
        return self.store.get(attempt.job_id).state.terminal or self.dispatcher.cancel_pending(attempt.job_id)

    def status(self, tenant: TenantId | None = None) -> dict[str, Any]:
        """Jobs by state: the tenant's own, or everyone's when `tenant` is None."""
        return {"jobs_by_state": {s.value: n for s, n in self.store.count_by_state(tenant).items()}}
