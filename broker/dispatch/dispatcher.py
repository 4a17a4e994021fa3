"""The lifecycle driver: queued jobs → decisions → attempts at sites → terminal states.

It is the imperative shell around the pure decision core: it gathers snapshots (offers,
capacity), asks `decide`, and acts, recording every step on the job before calling a backend.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import secrets
import time
from collections.abc import Mapping
from datetime import datetime
from functools import partial
from typing import Any

from adapters.base import Adapter, AdapterError, TransientError
from broker.agent_secret import SecretEscrow, new_agent_secret
from broker.burst.snapshot import PassSnapshot
from broker.clock import Clock
from broker.config import DispatchSettings
from broker.decision import Action, Decision
from broker.dispatch.attempts import AttemptTracking
from broker.dispatch.contract import OFFER_FAULTS, DecisionMaker, DispatchStats
from broker.dispatch.failover import NextStep, retry_transient
from broker.dispatch.gang import gang_launcher, launch_gang
from broker.dispatch.preempt import preempt
from broker.dispatch.reconcile import reconcile
from broker.metrics import BrokerMetrics
from broker.model import (
    BROKER_SIDE,
    Attempt,
    AttemptState,
    AttemptStatus,
    Job,
    JobId,
    JobState,
    LaunchRequest,
    SiteId,
)
from broker.placement import rejection_summary
from broker.serde_decision import decision_data, reclaim_json
from broker.store import JobStore

log = logging.getLogger(__name__)


_DIGITS = re.compile(r"[\d.]+")
UNREACHABLE_RETRY_S = 2.0
"""First retry of a site the reconciler could not reach; doubles up to the reconcile interval."""
DECISIONS_PER_SLICE = 10
HEAD_SCAN_WAITS = 64
"""A head scan (after capacity frees) stops deciding after this many waits in a row."""
FLOOD_SETTLE_S = 0.03
"""A new-jobs pass waits until submissions pause this long…"""
FLOOD_MAX_DELAY_S = 1.0
"""…but never delays the first new job's decision longer than this…"""
FLOOD_MAX_PENDING = 5000
"""…or lets more than this many undecided jobs pile up."""

ACTIVE = (JobState.PLACING, JobState.PROVISIONING, JobState.RUNNING)


class Dispatcher(AttemptTracking):
    """Moves jobs through the state machine; one asyncio task plus worker threads for I/O."""

    def __init__(
        self,
        store: JobStore,
        adapters: Mapping[SiteId, Adapter],
        *,
        planner: DecisionMaker,
        clock: Clock,
        settings: DispatchSettings | None = None,
        agent_endpoint: str = "",
        metrics: BrokerMetrics | None = None,
        escrow: SecretEscrow | None = None,
    ) -> None:
        self.store = store
        self.escrow = escrow or SecretEscrow(None)
        self.adapters = adapters
        self.planner = planner
        self.clock = clock
        self.settings = settings or DispatchSettings()
        self.agent_endpoint = agent_endpoint
        self.agent_ca_pem = ""
        """CA bundle instances verify the agent endpoint's certificate with (empty: system roots)."""
        self.stats = DispatchStats()
        self.metrics = metrics or BrokerMetrics()
        self.heartbeats: dict[str, datetime] = {}
        self._started_at = clock.now()
        self._background: set[asyncio.Task[None]] = set()
        self._last_reconcile = 0.0
        self._last_poll = 0.0
        self._snap: PassSnapshot | None = None
        self._snap_at = 0.0
        self._kick = asyncio.Event()
        self._dirty = True
        self._full = True
        self._new_jobs: dict[JobId, Job] = {}
        self._last_submit = 0.0
        self._first_new = 0.0
        self._inflight: dict[JobId, asyncio.Task[None]] = {}
        self._waiting_reason: dict[JobId, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_full_scan = 0.0
        self._unreachable: dict[SiteId, tuple[float, float]] = {}
        """Sites the last reconcile could not reach: (loop time of the next try, backoff)."""

    # Signals from the outside world ------------------------------------------------------

    def job_submitted(self, job: Job) -> None:
        loop_now = asyncio.get_running_loop().time()
        if not self._new_jobs:
            self._first_new = loop_now
        self._last_submit = loop_now
        self._new_jobs[job.id] = job
        self._kick.set()

    def capacity_changed(self) -> None:
        """Capacity freed or a job came back: re-decide the head of the queue now."""
        self._dirty = True
        self._snap = None
        self._kick.set()

    def policy_changed(self) -> None:
        """A new policy: every queued job is decided again, from the head to the tail."""
        self._full = True
        self.capacity_changed()

    # Lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.recover()
        await self._reconcile(None)
        self._last_reconcile = asyncio.get_running_loop().time()
        self._task = asyncio.create_task(self._run(), name="dispatcher")

    async def _reconcile(self, sites: set[SiteId] | None) -> None:
        """Reconcile `sites` (None: all); an unreachable site is unhealthy and retried soon."""
        report = await reconcile(
            self.store, self.adapters, self.clock, sites=sites, launching=set(self._inflight)
        )
        loop_now = asyncio.get_running_loop().time()
        for site in report.reached:
            if self._unreachable.pop(site, None) is not None:
                self.planner.mark_reachable(site)
                log.info("site %s is reachable again", site)
        for site, reason in report.unreachable.items():
            last = self._unreachable.get(site, (0.0, UNREACHABLE_RETRY_S / 2))[1]
            backoff = min(last * 2, self.settings.reconcile_interval_s)
            self._unreachable[site] = (loop_now + backoff, backoff)
            self.planner.mark_unreachable(site, reason)
        if report.unreachable:
            self.capacity_changed()

    async def stop(self) -> None:
        self._stopping = True
        self._kick.set()
        if self._task is not None:
            await self._task
        for task in [*self._inflight.values(), *self._background]:
            task.cancel()
        await asyncio.gather(*self._inflight.values(), *self._background, return_exceptions=True)

    async def recover(self) -> None:
        """After a restart: requeue half-placed jobs, re-attach live attempts, resume launches."""
        now = self.clock.now()
        resumed: set[str] = set()
        # PREEMPTED is a step on the way back to QUEUED: a broker killed between the two
        # transitions must not leave the job stranded there.
        for job in self.store.jobs_in_states([*ACTIVE, JobState.PREEMPTED]):
            attempts = self.store.attempts_for(job.id)
            live = [a for a in attempts if not a.state.terminal]
            if job.state in (JobState.PLACING, JobState.PREEMPTED) or not live:
                self.store.transition(
                    job.id,
                    JobState.QUEUED,
                    now,
                    kind="requeued",
                    message="broker restarted before the attempt was started",
                )
                continue
            attempt = live[-1]
            if attempt.backend_id is None:
                # The broker died between recording the attempt and storing the backend id:
                # submitting again with the same token adopts what the backend already started.
                resumed.add(attempt.id)
                secret = self.escrow.get(attempt.id)
                self._inflight[job.id] = asyncio.create_task(self._launch(job, attempt, None, secret))
        # Any other attempt without a backend id was never sent to a backend (its job was
        # requeued, or is over): close it, so planning never counts it as claimed capacity.
        for attempt in self.store.live_attempts():
            if attempt.backend_id is None and attempt.id not in resumed:
                self._close_unstarted(attempt, now, "the broker restarted before the attempt was started")
        self._dirty = True

    def _close_unstarted(self, attempt: Attempt, now: datetime, why: str) -> None:
        """Close an attempt no backend was ever asked to start; its reservation is released."""
        self.store.update_attempt(attempt.id, now, state=AttemptState.CANCELLED, error=BROKER_SIDE + why)
        self.store.settle_spend(attempt.id, spent=0.0, voucher=0.0)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await asyncio.wait_for(self._kick.wait(), timeout=self.settings.poll_interval_s)
            except TimeoutError:
                pass
            self._kick.clear()
            if self._stopping:
                break
            try:
                # New work first; backends are polled on their own interval, not on every
                # submission that wakes the loop.
                await self._schedule()
                loop_now = asyncio.get_running_loop().time()
                if loop_now - self._last_poll >= self.settings.poll_interval_s:
                    self._last_poll = loop_now
                    await self._poll_attempts()
                if loop_now - self._last_reconcile >= self.settings.reconcile_interval_s:
                    self._last_reconcile = loop_now
                    await self._reconcile(None)
                elif due := {s for s, (at, _) in self._unreachable.items() if at <= loop_now}:
                    await self._reconcile(due)
            except Exception:  # the loop must survive any one bad job or backend
                log.exception("dispatch pass failed")

    # Scheduling --------------------------------------------------------------------------

    async def _schedule(self) -> None:
        loop_now = asyncio.get_running_loop().time()
        if loop_now - self._last_full_scan >= self.settings.requeue_scan_s:
            self._full = True
        # Freed capacity can only start jobs at the head of the queue (deeper jobs' waits only
        # shrink, so none of them newly needs to burst): a head scan stops after a run of
        # waits. Periodic and policy-change scans decide every queued job.
        head_only: set[JobId] | None = None
        new_only = False
        if self._full or self._dirty:
            if self._full:
                self._last_full_scan = loop_now
            else:
                head_only = set(self._new_jobs)
            self._full = self._dirty = False
            self._new_jobs.clear()
            queued = await self._queued_jobs()
            if head_only is None:  # forget the waiting reasons of jobs that left the queue
                still = {j.id for j in queued}
                self._waiting_reason = {k: v for k, v in self._waiting_reason.items() if k in still}
        elif self._new_jobs:
            # During a flood of submissions, let them land first (they are durable already)
            # and decide them together a moment later.
            if (
                len(self._new_jobs) > 1
                and loop_now - self._last_submit < FLOOD_SETTLE_S
                and len(self._new_jobs) < FLOOD_MAX_PENDING
                and loop_now - self._first_new < FLOOD_MAX_DELAY_S
            ):
                asyncio.get_running_loop().call_later(FLOOD_SETTLE_S, self._kick.set)
                return
            new, self._new_jobs = self._new_jobs, {}
            queued = [j for j in new.values() if j.state == JobState.QUEUED]
            new_only = True
        else:
            return
        queued = [j for j in queued if j.id not in self._inflight]
        if not queued:
            return
        now = self.clock.now()
        pass_started = time.perf_counter()
        # A snapshot (adapters asked for capacity, prices) is reused by passes that only add
        # new jobs, until it is a poll interval old or something freed or changed capacity.
        if self._snap is None or loop_now - self._snap_at >= self.settings.poll_interval_s:
            live = self.store.live_attempts()
            self._snap = await asyncio.to_thread(self.planner.snapshot, now, live)
            self._snap_at = loop_now
            self.planner.observe_live(live, now, self.store)
        snap = self._snap
        # Across tenants by weighted dominant share (quota work first), then priority and age.
        queued = self.planner.order_queue(queued, now, full=not new_only)
        snap.now = now
        try:
            await self._decide_queue(queued, snap, head_only, now)
        finally:
            self.metrics.dispatch_pass_seconds.observe(time.perf_counter() - pass_started)

    async def _decide_queue(
        self, queued: list[Job], snap: PassSnapshot, head_only: set[JobId] | None, now: datetime
    ) -> None:
        waiting: list[tuple[JobId, str, dict[str, Any], str]] = []
        waits_in_a_row = 0
        for n, job in enumerate(queued, start=1):
            if head_only is not None and waits_in_a_row >= HEAD_SCAN_WAITS and job.id not in head_only:
                continue
            if n % DECISIONS_PER_SLICE == 0:
                self._flush_waiting(waiting, now)
                # A real (if short) sleep: sleep(0) does not let gRPC's poller hand over new calls.
                await asyncio.sleep(0.001)
                if self._stopping:
                    return
            started = time.perf_counter()
            decision = self.planner.decide(job, snap, self.store)
            self.metrics.placement_seconds.observe(time.perf_counter() - started)
            self.metrics.decisions.labels(decision.action.value).inc()
            self.stats.decisions += 1
            waits_in_a_row = waits_in_a_row + 1 if decision.action == Action.WAIT else 0
            if decision.action == Action.RUN and decision.offer is not None:
                self._waiting_reason.pop(job.id, None)
                self._start(job, decision)
                if decision.burst:
                    snap.money.pop(job.tenant, None)  # the next decision sees this reservation
            elif decision.action == Action.REJECT:
                self._waiting_reason.pop(job.id, None)
                log.info(
                    "job rejected: %s",
                    decision.summary,
                    extra=_decision_fields(job, decision, "rejected"),
                )
                self.store.transition(
                    job.id,
                    JobState.FAILED,
                    now,
                    kind="rejected",
                    message=decision.summary,
                    data={**decision_data(decision), **_audit_data(decision)},
                    policy_hash=decision.policy_hash,
                    expect=JobState.QUEUED,
                )
            elif (why := self._give_up_reason(job, now)) is not None:
                self._waiting_reason.pop(job.id, None)
                log.info("job gave up: %s", why, extra=_decision_fields(job, decision, "gave_up"))
                self.store.transition(
                    job.id,
                    JobState.FAILED,
                    now,
                    kind="gave_up",
                    message=why,
                    data=decision_data(decision),
                    expect=JobState.QUEUED,
                )
            else:
                if decision.reclaim:
                    self._reclaim(job, decision)
                reason = decision.summary or "waiting for capacity"
                # Record a new waiting event only when the reason changes, not its numbers.
                gist = _DIGITS.sub("#", reason)
                if self._waiting_reason.get(job.id) != gist:
                    self._waiting_reason[job.id] = gist
                    log.info("job waits: %s", reason, extra=_decision_fields(job, decision, "waiting"))
                    waiting.append((job.id, reason, decision_data(decision), decision.policy_hash))
        self._flush_waiting(waiting, now)

    def _reclaim(self, owner: Job, decision: Decision) -> None:
        """Fair share asked to preempt borrowed work for this job's quota: do it in the background."""
        self._in_background(
            preempt(
                reclaim_json(decision),
                owner,
                store=self.store,
                adapters=self.adapters,
                planner=self.planner,
                clock=self.clock,
                grace_s=self.planner.reclaim_grace_s(),
                on_freed=self.capacity_changed,
            )
        )

    async def current_snapshot(self) -> PassSnapshot:
        """The snapshot the next decision is made on: this pass's (claims and backlog included)
        while it is fresh, else a new one, as a pass would take it (never stored here)."""
        loop_now = asyncio.get_running_loop().time()
        now = self.clock.now()
        if self._snap is not None and loop_now - self._snap_at < self.settings.poll_interval_s:
            return dataclasses.replace(self._snap, now=now)
        return await asyncio.to_thread(self.planner.snapshot, now, self.store.live_attempts())

    async def _queued_jobs(self) -> list[Job]:
        """Every queued job, read a page at a time so a deep queue never stalls the RPCs."""
        jobs: list[Job] = []
        token = ""
        while True:
            page = self.store.list_jobs(None, states=[JobState.QUEUED], page_size=500, page_token=token)
            jobs.extend(page.jobs)
            token = page.next_page_token
            if not token:
                return jobs
            await asyncio.sleep(0)

    def _flush_waiting(self, waiting: list[tuple[JobId, str, dict[str, Any], str]], now: datetime) -> None:
        if waiting:
            self.store.record_many(
                [(job_id, "waiting", reason, data) for job_id, reason, data, _ in waiting], now
            )
            waiting.clear()

    def _give_up_reason(self, job: Job, now: datetime) -> str | None:
        """A waiting job fails when its deadline can no longer be met, or its attempts keep failing."""
        spec = job.spec
        if spec.deadline is not None and now + spec.runtime_estimate > spec.deadline:
            return f"deadline {spec.deadline.isoformat()} can no longer be met"
        plan = self.planner.failover()
        if job.attempts and (now - job.created_at).total_seconds() > plan.give_up_after_s:
            return (
                f"gave up: not started {plan.give_up_after_s / 3600:.1f} h after submission "
                f"despite {job.attempts} attempt(s)"
            )
        return None

    def _start(self, job: Job, decision: Decision) -> None:
        assert decision.offer is not None
        offer = decision.offer
        now = self.clock.now()
        job = self.store.transition(
            job.id,
            JobState.PLACING,
            now,
            kind="placed",
            message=f"placed on {offer.site} ({offer.instance_type})"
            + (" [burst]" if decision.burst else ""),
            data={**decision_data(decision), "offer": offer.model_dump(mode="json"), **_audit_data(decision)},
            policy_hash=decision.policy_hash,
            site=offer.site,
            expect=JobState.QUEUED,
        )
        if job.state != JobState.PLACING:
            return  # cancelled meanwhile
        log.info(
            "job placed on %s (%s)%s",
            offer.site,
            offer.instance_type,
            " [burst]" if decision.burst else "",
            extra=_decision_fields(job, decision, "placed"),
        )
        # The idempotency token names the attempt at its backend; the agent secret (only its
        # hash is stored) is what authenticates the attempt's reports.
        secret, secret_hash = new_agent_secret()
        attempt = self.store.create_attempt(
            job.id, offer.site, offer, secrets.token_hex(16), now, secret_hash=secret_hash
        )
        if not self.planner.reserve(job, attempt, decision, self.store):
            self.store.update_attempt(
                attempt.id, now, state=AttemptState.CANCELLED, error="budget would be exceeded"
            )
            self.store.transition(
                job.id,
                JobState.QUEUED,
                now,
                kind="budget",
                message=f"not bursting to {offer.site}: the budget would be exceeded; waiting on-prem",
            )
            return
        if decision.burst:
            self.stats.bursts.append(now)
            self.metrics.bursts.labels(offer.site).inc()
            log.info(
                "burst to %s (%s, %s/h)",
                offer.site,
                offer.instance_type,
                offer.price_per_hour,
                extra={**_decision_fields(job, decision, "burst"), "price": offer.price_per_hour},
            )
        self.metrics.attempts.labels(offer.site).inc()
        log.info(
            "attempt %d on %s",
            attempt.number,
            offer.site,
            extra={
                "event": "attempt",
                "job_id": job.id,
                "tenant": job.tenant,
                "site": offer.site,
                "attempt_id": attempt.id,
                "offer": offer.key,
            },
        )
        job = self.store.transition(
            job.id,
            JobState.PROVISIONING,
            now,
            kind="attempt",
            message=f"attempt {attempt.number} on {offer.site}",
            data={"attempt": attempt.id, "site": offer.site, "offer": offer.key},
        )
        self.escrow.put(attempt.id, secret)  # before any backend can have seen it
        self._inflight[job.id] = asyncio.create_task(self._launch(job, attempt, decision, secret))

    async def _launch(
        self, job: Job, attempt: Attempt, decision: Decision | None, secret: str | None = None
    ) -> None:
        try:
            if secret is None:
                # Resumed after a restart without its escrowed secret: only the hash survived,
                # so the attempt gets a new one (nothing can have started with the old one).
                secret, secret_hash = new_agent_secret()
                attempt = self.store.update_attempt(attempt.id, self.clock.now(), secret_hash=secret_hash)
            adapter = self.adapters.get(attempt.site)
            if adapter is None:
                raise AdapterError(attempt.site, "NoAdapter", "no adapter configured for this site")
            request = LaunchRequest(
                job_id=job.id,
                attempt_id=attempt.id,
                token=attempt.token,
                spec=job.spec,
                offer=attempt.offer,
                agent_endpoint=self.agent_endpoint,
                agent_ca_pem=self.agent_ca_pem,
                agent_token=secret,
            )
            account, qos = self.planner.batch_account(job)
            request = request.model_copy(update={"account": account, "qos": qos})
            plan = self.planner.failover()
            try:
                calls = 0

                def submit() -> str:
                    nonlocal calls
                    calls += 1
                    # A fresh attempt's first call cannot find anything under its token.
                    first = calls == 1 and decision is not None
                    return adapter.submit(request.model_copy(update={"first_call": first}))

                gang = gang_launcher(adapter) if job.spec.resources.nodes > 1 else None
                launch = (
                    partial(launch_gang, gang, request, plan.retry, fresh=decision is not None)
                    if gang is not None
                    else partial(retry_transient, submit, policy=plan.retry)
                )
                backend_id = await asyncio.wait_for(asyncio.to_thread(launch), timeout=plan.attempt_timeout_s)
            except TimeoutError as exc:
                raise TransientError(
                    attempt.site, "AttemptTimeout", f"no answer within {plan.attempt_timeout_s:.0f}s"
                ) from exc
            now = self.clock.now()
            self.store.update_attempt(attempt.id, now, backend_id=backend_id)
            self.planner.record_success(attempt)
            self.stats.launches += 1
            current = self.store.get(job.id)
            if current.state == JobState.CANCELLED:
                await asyncio.to_thread(adapter.cancel, backend_id, attempt.token)
                self.store.update_attempt(attempt.id, now, state=AttemptState.CANCELLED)
        except AdapterError as exc:
            await self._attempt_failed(job, attempt, exc)
        finally:
            self.escrow.drop(attempt.id)
            self._inflight.pop(job.id, None)

    async def _attempt_failed(self, job: Job, attempt: Attempt, exc: AdapterError) -> None:
        now = self.clock.now()
        attempt = self.store.update_attempt(
            attempt.id, now, state=AttemptState.FAILED, error=f"{type(exc).__name__}: {exc}"
        )
        self.planner.settle(
            job, attempt, AttemptStatus(state=AttemptState.FAILED, message=str(exc)), self.store
        )
        step = self.planner.record_failure(attempt, exc)
        current = self.store.get(job.id)
        if current.state.terminal:
            return
        data = {
            "attempt": attempt.id,
            "site": exc.site,
            "offer": attempt.offer.key,
            "code": exc.code,
            "error": type(exc).__name__,
            "next": step.value,
        }
        counted = sum(
            1 for a in self.store.attempts_for(job.id) if a.state.terminal and not _offer_fault(a.error)
        )
        fields = {
            "job_id": job.id,
            "tenant": job.tenant,
            "site": exc.site,
            "attempt_id": attempt.id,
            "offer": attempt.offer.key,
            "error": f"{type(exc).__name__} {exc.code}",
            "next": step.value,
        }
        if step == NextStep.FAIL_JOB:
            # The job's own request (its user data, say) was refused: retrying elsewhere would
            # only repeat it, and the site is healthy.
            log.warning(
                "attempt %d on %s refused for the job's own request: %s",
                attempt.number,
                attempt.offer.key,
                exc.message,
                extra={"event": "attempt_failed", **fields},
            )
            self.store.transition(
                job.id,
                JobState.FAILED,
                now,
                kind="attempt_failed",
                message=f"the job's request was refused by {exc.site} ({exc.code}): {exc.message}",
                data=data,
            )
        elif step in OFFER_FAULTS or counted < self.planner.failover().max_attempts:
            self.metrics.failovers.labels(attempt.site, type(exc).__name__).inc()
            log.warning(
                "failover: attempt %d on %s failed: %s",
                attempt.number,
                attempt.offer.key,
                exc.message,
                extra={"event": "failover", **fields},
            )
            self.store.transition(
                job.id,
                JobState.QUEUED,
                now,
                kind="attempt_failed",
                message=f"attempt {attempt.number} on {attempt.offer.key} failed "
                f"({type(exc).__name__} {exc.code}): {exc.message}; next: {step.value}",
                data=data,
            )
        else:
            log.warning(
                "attempt %d on %s failed, no attempts left: %s",
                attempt.number,
                attempt.offer.key,
                exc.message,
                extra={"event": "attempt_failed", **fields},
            )
            self.store.transition(
                job.id,
                JobState.FAILED,
                now,
                kind="attempt_failed",
                message=f"gave up after {current.attempts} attempts: {exc}",
                data=data,
            )
        self.capacity_changed()


def _decision_fields(job: Job, decision: Decision, event: str) -> dict[str, Any]:
    """The structured fields of a decision's log line: job, tenant, site, rule ids, policy."""
    rules: list[str] = []
    if decision.explanation is not None and decision.action != Action.RUN:
        rules = sorted({r.rule for r in rejection_summary(decision.explanation)})[:20]
    offer = decision.offer
    return {
        "event": event,
        "job_id": job.id,
        "tenant": job.tenant,
        "site": offer.site if offer is not None else None,
        "offer": offer.key if offer is not None else None,
        "action": decision.action.value,
        "rules": rules,
        "policy_hash": decision.policy_hash[:12],
    }


def _audit_data(decision: Decision) -> dict[str, Any]:
    """What the audit trail keeps with a decision's event: the policy and the deciding rules."""
    rules: list[str] = []
    if decision.explanation is not None and decision.action != Action.RUN:
        rules = sorted({r.rule for r in rejection_summary(decision.explanation)})
    return {"policy_hash": decision.policy_hash, "rules": rules}


def _offer_fault(error: str) -> bool:
    return error.startswith(("CapacityError", "QuotaError", "UnsupportedError", "AuthError", "ConfigError"))
