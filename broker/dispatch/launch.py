"""Starting a decided job: record the placement and the attempt, then submit it to its backend.

Every step is recorded on the job before a backend is called; a failed submit moves the job on
(fail it, fail over, or give up) through one path.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from functools import partial

from adapters.base import Adapter, AdapterError, TransientError
from broker.agent_secret import SecretEscrow, new_agent_secret
from broker.burst import is_onprem
from broker.config import DispatchSettings
from broker.decision import Decision
from broker.dispatch.cancelling import Cancelling
from broker.dispatch.contract import OFFER_FAULTS, DispatchStats
from broker.dispatch.failover import AttemptTimeoutError, NextStep
from broker.dispatch.gang import LaunchStopped, gang_launcher, launch_gang
from broker.dispatch.health import OWN_STORAGE
from broker.dispatch.launch_outage import LAUNCHING, left_to_launch, through_store_outages
from broker.dispatch.own_refusals import after_own_refusal
from broker.dispatch.records import (
    BURST,
    audit_data,
    burst_said,
    decision_fields,
    failover_said,
    used_an_attempt,
)
from broker.dispatch.reservations import refused_reservation, reservation_refusal
from broker.dispatch.retry import RetryPolicy, retry_transient
from broker.metrics import BrokerMetrics
from broker.model import BROKER_SIDE, Attempt, AttemptState, AttemptStatus, Job, JobState, LaunchRequest
from broker.serde_decision import decision_data, spot_data
from broker.store import FencedOut, StoreError, StoreUnavailable
from broker.waiting import end_unawaited, within

log = logging.getLogger(__name__)


class Launching(Cancelling):
    """The part of the dispatcher that starts attempts; mixed into `Dispatcher`."""

    escrow: SecretEscrow
    settings: DispatchSettings
    stats: DispatchStats
    metrics: BrokerMetrics
    agent_endpoint: str
    agent_ca_pem: str
    _last_withdraw: float

    def _start(self, job: Job, decision: Decision) -> None:
        """Place the job on the decision's offer, reserve its money and launch an attempt."""
        assert decision.offer is not None
        offer = decision.offer
        now = self.clock.now()
        job = self.store.transition(
            job.id,
            JobState.PLACING,
            now,
            kind="placed",
            message=f"placed on {offer.site} ({offer.instance_type})" + burst_said(decision),
            data={
                **decision_data(decision),
                **spot_data(decision, job.spec, self.planner.policy),  # on spot: what it is expected to take
                "offer": offer.model_dump(mode="json"),
                **audit_data(decision),
            },
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
            BURST if decision.burst else "",
            extra=decision_fields(job, decision, "placed"),
        )
        # The idempotency token names the attempt at its backend; the agent secret (only its
        # hash is stored) is what authenticates the attempt's reports.
        secret, secret_hash = new_agent_secret()
        attempt = self.store.create_attempt(
            job.id, offer.site, offer, secrets.token_hex(16), now, secret_hash=secret_hash
        )
        if not self.planner.reserve(job, attempt, decision, self.store):
            self._over_budget(job, attempt, decision)
            return
        job = self.store.transition(
            job.id,
            JobState.PROVISIONING,
            now,
            kind="attempt",
            message=self._attempt_message(attempt, decision),
            data={"attempt": attempt.id, "site": offer.site, "offer": offer.key},
            expect=JobState.PLACING,
        )
        if job.state != JobState.PROVISIONING:
            # An API replica cancelled it after it was placed (another process: no lock of ours
            # covers that): nothing was sent, so the attempt closes here and the pass goes on.
            self._close_unstarted(attempt, now, f"the job was {job.state.value} before its launch")
            return
        self._count_attempt(job, attempt, decision)
        self.escrow.put(attempt.id, secret)  # before any backend can have seen it
        self._inflight[job.id] = asyncio.create_task(self._launch(job, attempt, decision, secret))

    def _attempt_message(self, attempt: Attempt, decision: Decision) -> str:
        """The job's message while its attempt starts. At a backend that queues jobs itself the job
        may pend there a while: say why it was sent (its projected wait), as `szb list` shows; a
        burst says why it burst."""
        said = f"attempt {attempt.number} on {attempt.site}"
        if decision.burst:  # why it burst, kept on once it runs (`running_said`)
            return said + burst_said(decision)
        if attempt.site in self.planner.queueing_sites() and decision.summary:
            return f"{said}: {decision.summary}"
        return said

    def _over_budget(self, job: Job, attempt: Attempt, decision: Decision) -> None:
        """The burst's reservation was refused: close the attempt (broker-side) and requeue the job."""
        now = self.clock.now()
        money = self.planner.ledger.money(job.tenant, now, self.store)
        why = reservation_refusal(money, decision.facts.cash or 0.0)
        refused_reservation(self.store, job, attempt, why, now)

    def _count_attempt(self, job: Job, attempt: Attempt, decision: Decision) -> None:
        """Metrics, stats and log lines of a new attempt (and of the burst it may be)."""
        offer = attempt.offer
        if decision.burst:  # (counted as a burst once it starts: `_launch_once`)
            log.info("burst to %s (%s, %s %s/h)", offer.site, offer.instance_type, offer.price_per_hour,
                     offer.currency, extra={**decision_fields(job, decision, "burst"),
                                            "price": offer.price_per_hour, "currency": offer.currency})
        self.metrics.attempts.labels(offer.site).inc()
        fields = {"event": "attempt", "job_id": job.id, "tenant": job.tenant, "site": offer.site,
                  "attempt_id": attempt.id, "offer": offer.key}
        log.info("attempt %d on %s", attempt.number, offer.site, extra=fields)

    async def _launch(
        self, job: Job, attempt: Attempt, decision: Decision | None, secret: str | None = None
    ) -> None:
        """Launch an attempt. A store that fails under the launch is waited out, then what is left
        is done from what the store holds (`broker.dispatch.launch_outage`)."""
        deposed = False
        try:
            async for trial in through_store_outages(self.store_outage):
                with trial:
                    if trial.retry_state.attempt_number > 1:
                        left = left_to_launch(self.store, self.planner.ledger, self.clock, job.id, attempt.id)
                        if left is None:
                            break
                        (job, attempt), decision = left, None  # by its token: adopts what started
                    if secret is None:
                        # Resumed after a restart without its escrowed secret: only the hash survived,
                        # so the attempt gets a new one (nothing can have started with the old one).
                        secret, attempt = self._new_secret(attempt)
                    await self._launch_once(job, attempt, decision, secret)
            self.store_outage.ok(LAUNCHING)
        except FencedOut as exc:
            # Deposed mid-launch: the next leader resumes it with the same token, and the secret
            # the instance may have: dropped here, it minted another, which the instance's
            # reports could never match (held-out review: jobs stuck RUNNING, agents refused).
            deposed = True
            log.info("launch of %s left to the next leader: %s", attempt.id, exc)
        finally:
            if not deposed:
                self.escrow.drop(attempt.id)
            self._inflight.pop(job.id, None)

    def _new_secret(self, attempt: Attempt) -> tuple[str, Attempt]:
        secret, secret_hash = new_agent_secret()
        return secret, self.store.update_attempt(attempt.id, self.clock.now(), secret_hash=secret_hash)

    async def _launch_once(self, job: Job, attempt: Attempt, decision: Decision | None, secret: str) -> None:
        """Submit the attempt and record its start, or its failure (a store failure is the caller's)."""
        try:
            adapter = self.adapters.get(attempt.site)
            if adapter is None:
                raise AdapterError(attempt.site, "NoAdapter", "no adapter configured for this site")
            request = self._launch_request(job, attempt, secret)
            backend_id = await self._submit(adapter, request, first=decision is not None)
            now = self.clock.now()
            self.store.update_attempt(attempt.id, now, backend_id=backend_id)
            if attempt.site in self.planner.queueing_sites():  # within 2 s, jobs pending ahead of it
                soon = asyncio.get_running_loop().time() - self.settings.requeue_scan_s + 2.0
                self._last_withdraw = min(self._last_withdraw, soon)  # unfairly go back (withdraw_fair)
            self.planner.record_success(attempt)
            self.stats.launches += 1
            if not is_onprem(self.planner.policy, attempt.site):  # a job burst, where it started
                self.stats.bursts.append(attempt.created_at)  # as a restart reads it (`attempt_times`)
                self.metrics.bursts.labels(attempt.site).inc()
            current = self.store.get(job.id)
            if current.state == JobState.CANCELLED:  # cancelled after the launch's last look
                await asyncio.to_thread(adapter.cancel, backend_id, attempt.token)
                why = f"the job was cancelled while attempt {attempt.number} launched; {backend_id} cancelled"
                self._launch_stopped(job, attempt, why)
        except AdapterError as exc:
            await self._attempt_failed(job, attempt, exc)
        except LaunchStopped as stop:
            self._launch_stopped(job, attempt, str(stop))
        except (StoreUnavailable, FencedOut):
            raise
        except Exception as exc:  # an adapter broke its contract: fail the attempt, never leave it pending
            own = exc if isinstance(exc, OSError) and exc.errno in OWN_STORAGE else None  # (the host's disk)
            if own is None:
                log.exception("launch of %s raised %s", attempt.id, type(exc).__name__)
            broken = AdapterError(attempt.site, type(exc).__name__, str(exc)[:300])
            await self._attempt_failed(job, attempt, broken, own_storage=own)

    def _unwanted(self, request: LaunchRequest) -> str | None:
        """Why a launch in flight should make no further cloud call (None: go on): its job
        ended (a cancel, here or through an API replica) or its attempt did (it timed out)."""
        try:
            job = self.store.get(request.job_id)
            attempt = self.store.get_attempt(request.attempt_id)
        except StoreError as exc:  # go on: the launch's end looks at the job again
            log.warning("launch of %s: the store could not be read (%s)", request.attempt_id, exc)
            return None
        if job.state.terminal:
            return f"the job is {job.state.value}"
        if attempt.state.terminal:
            return f"the attempt is {attempt.state.value}"
        return None

    def _launch_stopped(self, job: Job, attempt: Attempt, why: str) -> None:
        """A launch stopped because its attempt is no longer wanted, and what it started is
        cancelled: close the attempt (unless its timeout closed it already), settling its spend."""
        if self.cancelled(job, attempt, why):
            log.info("%s", why, extra={"event": "launch_stopped", "job_id": job.id, "attempt_id": attempt.id})
            self.capacity_changed()

    def _late_launch(self, request: LaunchRequest, number: int, work: asyncio.Future[str]) -> None:
        """The worker thread of a launch past its attempt timeout ended (the attempt is closed)."""
        if work.cancelled():
            return
        exc = work.exception()
        if isinstance(exc, LaunchStopped):
            self.store.record(
                request.job_id,
                self.clock.now(),
                kind="launch_stopped",
                message=f"attempt {number}, closed by its timeout: {exc}",
                data={"attempt": request.attempt_id},
            )
        elif exc is None:  # its last look came before the timeout closed it: remove what it started
            attempt = self.store.get_attempt(request.attempt_id)
            why = f"started after attempt {number} timed out"
            self._in_background(self._terminate(attempt, work.result(), why))
        else:
            log.info("late launch of %s ended: %s", request.attempt_id, exc)

    def _launch_request(self, job: Job, attempt: Attempt, secret: str) -> LaunchRequest:
        account, qos, user = self.planner.batch_account(job)
        return LaunchRequest(
            job_id=job.id,
            attempt_id=attempt.id,
            token=attempt.token,
            spec=job.spec,
            offer=attempt.offer,
            agent_endpoint=self.agent_endpoint,
            agent_ca_pem=self.agent_ca_pem,
            agent_token=secret,
            account=account,
            qos=qos,
            user=user,
            attempt_number=attempt.number,
        )

    async def _submit(self, adapter: Adapter, request: LaunchRequest, *, first: bool) -> str:
        """Submit in a worker thread, retrying transient errors, within the attempt timeout.

        `first`: a fresh attempt's first call (nothing can exist under its token yet). A gang
        at a cloud starts all its nodes together (`broker.dispatch.gang`).
        """
        plan = self.planner.failover()
        unwanted = partial(self._unwanted, request)
        gang = gang_launcher(adapter) if request.spec.resources.nodes > 1 else None
        launch: Callable[[], str] = (
            partial(launch_gang, gang, request, plan.retry, fresh=first, unwanted=unwanted)
            if gang is not None
            else partial(launch_one, adapter, request, plan.retry, fresh=first, unwanted=unwanted)
        )
        # The thread cannot be stopped: past the timeout it stops itself at its next look.
        work = asyncio.ensure_future(asyncio.to_thread(launch))
        try:
            return await within(asyncio.shield(work), plan.attempt_timeout_s)
        except asyncio.CancelledError:  # (a deposed leader's term ending): the thread ends by itself
            work.add_done_callback(end_unawaited)
            raise
        except TimeoutError as exc:
            work.add_done_callback(partial(self._late_launch, request, request.attempt_number))
            raise AttemptTimeoutError(
                request.offer.site, "AttemptTimeout", f"no answer within {plan.attempt_timeout_s:.0f}s"
            ) from exc

    async def _attempt_failed(
        self, job: Job, attempt: Attempt, exc: AdapterError, own_storage: OSError | None = None
    ) -> None:
        """`own_storage`: the launch failed on the broker host's own disk, which counts against
        neither the job's attempts nor the site's breaker (`BROKER_SIDE`)."""
        now = self.clock.now()
        error = ("" if own_storage is None else BROKER_SIDE) + f"{type(exc).__name__}: {exc}"
        attempt = self.store.update_attempt(attempt.id, now, state=AttemptState.FAILED, error=error)
        status = AttemptStatus(state=AttemptState.FAILED, message=str(exc))
        self.planner.settle(job, attempt, status, self.store, ran=not refused_outright(job, attempt, exc))
        if own_storage is None:
            step = self.planner.record_failure(attempt, exc)
        else:
            step = self.planner.health.own_storage_failed(attempt, own_storage)
        current = self.store.get(job.id)
        if current.state.terminal:
            return
        state, event, text, message = self._after_failure(current, attempt, exc, step)
        name = type(exc).__name__
        failover_said(
            log, self.metrics, job, attempt, text, exc.message, error=f"{name} {exc.code}", label=name,
            event=event, site=exc.site, next=step.value,
        )
        data = {
            "attempt": attempt.id,
            "site": exc.site,
            "offer": attempt.offer.key,
            "code": exc.code,
            "error": type(exc).__name__,
            "next": step.value,
        }
        self.store.transition(job.id, state, now, kind="attempt_failed", message=message, data=data)
        self.capacity_changed()

    def _after_failure(
        self, job: Job, attempt: Attempt, exc: AdapterError, step: NextStep
    ) -> tuple[JobState, str, str, str]:
        """Where a job goes after a failed submit: (state, log event, log format, event message)."""
        if step == NextStep.SKIP_SITE_FOR_JOB:  # the site is healthy: only this job is kept off it
            offers, policy = self.planner.catalog_offers(), self.planner.policy
            return after_own_refusal(job, exc, self.store, offers=offers, policy=policy, now=self.clock.now())
        counted = sum(1 for a in self.store.attempts_for(job.id) if used_an_attempt(a))
        if step in OFFER_FAULTS or counted < self.planner.failover().max_attempts:
            return (
                JobState.QUEUED,
                "failover",
                "failover: attempt %d on %s failed: %s",
                f"attempt {attempt.number} on {attempt.offer.key} failed "
                f"({type(exc).__name__} {exc.code}): {exc.message}; next: {step.value}",
            )
        return (
            JobState.FAILED,
            "attempt_failed",
            "attempt %d on %s failed, no attempts left: %s",
            f"gave up after {job.attempts} attempts: {exc}",
        )


def refused_outright(job: Job, attempt: Attempt, exc: AdapterError) -> bool:
    """The cloud refused a single-node launch outright, so no instance of it ever existed
    (after a timeout or a transient error one may have)."""
    # A gang's rolled-back nodes may have run: it is still billed for its launch.
    return (
        attempt.backend_id is None and not isinstance(exc, TransientError) and job.spec.resources.nodes == 1
    )


def launch_one(
    adapter: Adapter,
    request: LaunchRequest,
    retry: RetryPolicy,
    *,
    fresh: bool,
    unwanted: Callable[[], str | None],
) -> str:
    """Start a single-node attempt (blocking; run it in a thread), retrying transient errors.

    `unwanted` is asked before each call and once the instance started: a reason (the job was
    cancelled, the attempt timed out) stops the launch with `LaunchStopped`, its instance cancelled.
    """
    calls = 0

    def submit() -> str:
        nonlocal calls
        why = unwanted()
        if why:
            raise LaunchStopped(f"launch stopped before its {'first' if not calls else 'next'} call: {why}")
        calls += 1
        return adapter.submit(request.model_copy(update={"first_call": fresh and calls == 1}))

    backend_id = retry_transient(submit, policy=retry)
    why = unwanted()
    if not why:
        return backend_id
    try:
        retry_transient(lambda: adapter.cancel(backend_id, request.token), policy=retry)
    except AdapterError as exc:  # the reconciler removes it once the attempt is closed
        log.warning("cancelling %s of unwanted %s failed: %s", backend_id, request.attempt_id, exc)
    raise LaunchStopped(f"launch stopped once {backend_id} started: {why}; {backend_id} cancelled")
