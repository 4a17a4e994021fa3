"""Watching attempts at their backends: status polls, agent reports, termination."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from adapters.base import Adapter, AdapterError, LogSource, NotFoundError, status_for
from broker.clock import Clock
from broker.dispatch.contract import DecisionMaker
from broker.dispatch.gang import gang_status, is_gang_attempt, vanished
from broker.dispatch.hung import listing_grace, not_listed_yet, pending_too_long
from broker.dispatch.records import failover_said, log_attempt_end, running_said, used_an_attempt
from broker.dispatch.silence import silent_attempt
from broker.dispatch.site_polls import SitePolls
from broker.dispatch.spot_limit import required_spot_failure, spot_interruptions
from broker.dispatch.termination import terminate
from broker.heard import Heard
from broker.jobspec import SpotMode
from broker.metrics import BrokerMetrics
from broker.model import BROKER_SIDE, Attempt, AttemptState, AttemptStatus, Job, JobId, JobState, SiteId
from broker.store import JobMove, JobStore, StoreUnavailable
from broker.store_outage import StoreOutageLog

log = logging.getLogger(__name__)

LOST_ERROR = "AttemptLost"
"""The `error` label of a failover after a lost attempt (a failed launch's is its error class)."""


class AttemptTracking:
    """The part of the dispatcher that follows live attempts; mixed into `Dispatcher`."""

    store: JobStore
    adapters: Mapping[SiteId, Adapter]
    planner: DecisionMaker
    clock: Clock
    heartbeats: Heard
    started_at: datetime
    """When this process started following attempts: no silence before it is known."""
    _background: set[asyncio.Task[None]]
    _inflight: dict[JobId, asyncio.Task[None]]
    _stops_in_flight: set[str]
    _polls: SitePolls
    store_outage: StoreOutageLog
    metrics: BrokerMetrics

    def capacity_changed(self) -> None:
        """Re-decide queued jobs (the dispatcher's own; a no-op here)."""

    def cancel_pending(self, job_id: JobId) -> bool:
        """A cancel of the job waits to be settled (only an API replica records such requests)."""
        return False

    # Watching attempts -------------------------------------------------------------------

    async def _poll_attempts(self) -> None:
        now = asyncio.get_running_loop().time()
        attempts = self.store.live_attempts()
        self.heartbeats.keep_only(a.id for a in attempts)  # (those that ended by any path)
        live = [
            a
            for a in attempts
            if a.backend_id is not None and a.job_id not in self._inflight and self._polls.due(a.site, now)
        ]
        results = await asyncio.gather(*(self._poll_one(a) for a in live), return_exceptions=True)
        store_failed = False
        for attempt, result in zip(live, results, strict=True):
            if isinstance(result, StoreUnavailable):  # the same for every attempt, every poll
                store_failed = True
                self.store_outage.failed("polling attempts", result)
            elif isinstance(result, BaseException):
                log.warning("polling %s failed: %s", attempt.id, result)
        if not store_failed:
            self.store_outage.ok("polling attempts")
        if not live:
            return
        self.planner.ledger.accrue(live, self.store)  # (those that ended meanwhile are settled)

    async def _poll_one(self, attempt: Attempt) -> None:
        adapter = self.adapters.get(attempt.site)
        if adapter is None or attempt.backend_id is None:
            return
        # A cloud may not list an instance it has just started (EC2's eventual consistency).
        age_s = self.heartbeats.age_s(attempt)
        fresh = not_listed_yet(attempt, grace_s=listing_grace(adapter), pending_s=age_s,
                               timeout_s=self.planner.failover().attempt_timeout_s)
        try:
            if is_gang_attempt(attempt):
                status = await asyncio.to_thread(gang_status, adapter, attempt, self.store, fresh=fresh)
            else:
                status = await asyncio.to_thread(status_for, adapter, attempt.backend_id, attempt.token)
        except NotFoundError as exc:
            if fresh:
                log.info("%s not listed by %s yet: %s", attempt.id, attempt.site, exc)
                return
            status = vanished(attempt, attempt.backend_id)
        except AdapterError as exc:
            if not self._polls.failed(attempt.site, asyncio.get_running_loop().time(), exc):
                log.info("status of %s unavailable: %s", attempt.id, exc)
            return
        self._polls.answered(attempt.site)
        if self.planner.needs_agent(attempt.site):
            status = pending_too_long(attempt, status, self.heartbeats.pending_s(attempt, self.started_at),
                                      timeout_s=self.planner.failover().attempt_timeout_s)
        if status.state == AttemptState.RUNNING and self.planner.needs_agent(attempt.site):
            # After a (re)start every live attempt gets a full heartbeat timeout of grace.
            silent = self.heartbeats.silent_s(attempt, self.started_at)
            timeout_s = self.planner.failover().heartbeat_timeout_s
            if silent > timeout_s:
                try:  # its job may have ended, its report unable to reach us: the console says
                    status = await silent_attempt(adapter, attempt, silent, timeout_s, store=self.store,
                                                  now=self.clock.now(), heard=attempt.id in self.heartbeats)
                except AdapterError as exc:
                    log.info("kept result of silent %s unavailable: %s", attempt.id, exc)
                    return
        if status.state == AttemptState.LOST and self._unheard_since_restart(attempt):
            # Its agent may have given up on us while we were down: our fault, not the route's.
            status = status.model_copy(update={"message": BROKER_SIDE + status.message})
        self.apply_status(attempt, status)

    def _running(self, job: Job, attempt: Attempt, now: datetime) -> None:
        """The attempt runs (its job moves to RUNNING); a launch that just came up is timed."""
        move = JobMove(JobState.RUNNING, "running", running_said(job, attempt), expect=JobState.PROVISIONING)
        self.store.update_attempt(attempt.id, now, state=AttemptState.RUNNING, moves=[move])
        if attempt.state == AttemptState.PENDING:
            self.planner.launched(attempt, now)

    def _unheard_since_restart(self, attempt: Attempt) -> bool:
        """An agent-run attempt started before this broker did, never heard from since."""
        return (
            self.planner.needs_agent(attempt.site)
            and attempt.created_at < self.started_at
            and attempt.id not in self.heartbeats
        )

    def heartbeat(self, attempt: Attempt) -> None:
        """The agent on an instance is alive (AgentService)."""
        self.heartbeats.beat(attempt.id)

    def apply_status(self, attempt: Attempt, status: AttemptStatus, *, by_agent: bool = False) -> None:
        """Fold what a backend (or an attempt's agent: `by_agent`) reported into job and attempt."""
        now = self.clock.now()
        # The caller's copy may be stale (a poll racing an agent report): decide on the stored one.
        attempt = self.store.get_attempt(attempt.id)
        if attempt.state.terminal:
            return
        job = self.store.get(attempt.job_id)
        if job.state.terminal and not status.state.terminal:
            self._stop_leftover(job, attempt)  # its backend still runs it: a stop that failed
            return
        if not status.state.terminal:
            self._note_held(job, attempt, status)  # held or suspended there, or no longer
        if status.state == AttemptState.PENDING:  # nothing moves while it pends (or is suspended)
            return
        if status.state == AttemptState.RUNNING:
            if attempt.state != AttemptState.RUNNING or job.state == JobState.PROVISIONING:
                self._running(job, attempt, now)
            return
        # The attempt's end and its job's move are one transaction: never one without the other.
        moves = self._ending_moves(job, attempt, status, now)
        attempt = self.store.update_attempt(
            attempt.id, now, state=status.state, error=status.message, moves=moves
        )
        log_attempt_end(log, job, attempt, status)
        if job.state.terminal:  # a poll that saw a cancel's stop through before the stop returned
            self._keep_tail(job, attempt, status.log_tail)
        if any(m.kind == "lost" and m.state == JobState.QUEUED for m in moves) and not attempt.broker_side:
            self._lost_failover(job, attempt)
        self.planner.settle(job, attempt, status, self.store)
        self.heartbeats.forget(attempt.id)
        # An agent's word ends it at its backend, on-prem too (there the job holds the secret).
        if (by_agent or self.planner.needs_agent(attempt.site)) and attempt.backend_id is not None:
            if status.reclaiming:
                self._leave_to_cloud(attempt)
            else:
                self._in_background(self._terminate(attempt))
        if status.state == AttemptState.PREEMPTED:
            self.planner.record_preemption(attempt)
        elif status.state == AttemptState.LOST and not attempt.broker_side:
            self.planner.health.record_lost(attempt)
        self.capacity_changed()

    def _lost_failover(self, job: Job, attempt: Attempt) -> None:
        """A lost attempt after which the job moved on is a failover, as a failed launch is."""
        failover_said(
            log, self.metrics, job, attempt, "failover: attempt %d on %s lost: %s", attempt.error,
            error=LOST_ERROR, label=LOST_ERROR,
        )

    def _note_held(self, job: Job, attempt: Attempt, status: AttemptStatus) -> None:
        """The job's message says when its backend holds or suspends it (Slurm's JobHeldAdmin, a
        suspension: it will not start or go on by itself), and no longer once it does not."""
        note = f"at {attempt.site}: "
        if status.cause:
            message, kind = note + status.cause, "held"
        elif job.message.startswith(note) and (
            status.state == AttemptState.PENDING or job.state == JobState.RUNNING
        ):  # (a held job that starts: its "running on" move replaces the note)
            going = "running" if status.state == AttemptState.RUNNING else "pending in its queue"
            message, kind = f"released at {attempt.site}: {going}", "released"
        else:
            return
        if job.message != message:
            data = {"site": attempt.site, "backend_id": attempt.backend_id, "status": status.message}
            self.store.record_many([(job.id, kind, message, data)], self.clock.now())

    def _ending_moves(
        self, job: Job, attempt: Attempt, status: AttemptStatus, now: datetime
    ) -> list[JobMove]:
        """How the job moves when its attempt ended with `status` (not at all once it ended)."""
        if job.state.terminal:
            return []
        ending = self._job_moves(job, attempt, status)
        if status.stopped_at is not None:  # it ended while nobody looked (the broker was down)
            at = min(max(status.stopped_at, attempt.created_at), now)
            ending = [replace(m, at=at) if m.at is None else m for m in ending]
        return [*self._unseen_run(job, attempt, status, now), *ending]

    @staticmethod
    def _unseen_run(job: Job, attempt: Attempt, status: AttemptStatus, now: datetime) -> list[JobMove]:
        """The RUNNING move of a job that started and ended between two polls: it ran (it
        succeeded, or failed or was preempted with an exit code or a start time), but no poll saw
        it run. Its event is at the backend's start time where known, so its run time is real."""
        if job.state != JobState.PROVISIONING:
            return []
        if status.state in (AttemptState.FAILED, AttemptState.PREEMPTED):
            ran = status.exit_code is not None or status.started_at is not None
        else:  # cancelled or lost: only where the backend says it started
            ran = status.state == AttemptState.SUCCEEDED or status.started_at is not None
        if not ran:
            return []
        at = None if status.started_at is None else min(max(status.started_at, attempt.created_at), now)
        said = running_said(job, attempt)
        return [JobMove(JobState.RUNNING, "running", said, expect=JobState.PROVISIONING, at=at)]

    def _job_moves(self, job: Job, attempt: Attempt, status: AttemptStatus) -> list[JobMove]:
        """How the job moves when its attempt ended with `status`."""
        fields: dict[str, Any] = {"log_tail": status.log_tail}
        if status.exit_code is not None:
            fields["exit_code"] = status.exit_code
        if status.state == AttemptState.SUCCEEDED:
            return [JobMove(JobState.SUCCEEDED, "finished", "exit code 0", fields=fields)]
        if status.state == AttemptState.FAILED:
            # A gang's status names the rank that failed ("rank 1 of 4: …"): keep it in the message.
            rank = f" ({status.message.split(':')[0]})" if status.message.startswith("rank ") else ""
            ended = f"exit code {status.exit_code}" if status.exit_code is not None else "failed"
            message = f"{ended}{rank}" + (f": {status.cause}" if status.cause else "")
            return [JobMove(JobState.FAILED, "finished", message, fields=fields)]
        if status.state == AttemptState.CANCELLED:
            return [JobMove(JobState.CANCELLED, "cancelled", "cancelled at the backend", fields=fields)]
        if status.state == AttemptState.PREEMPTED:
            data = {"site": attempt.site, "offer": attempt.offer.key}
            preempted = JobMove(JobState.PREEMPTED, "preempted", f"preempted on {attempt.site}", data=data,
                                fields=fields)
            if attempt.offer.spot and job.spec.spot == SpotMode.REQUIRED:  # (else no store read)
                count = spot_interruptions(job, self.store, ending=attempt)
                why = required_spot_failure(job.spec, count, self.planner.policy)
                if why is not None:
                    return [preempted, JobMove(JobState.FAILED, "finished", why)]
            return [preempted, JobMove(JobState.QUEUED, "requeued", "requeued after preemption")]
        # LOST
        used = sum(1 for a in self.store.attempts_for(job.id) if a.id == attempt.id or used_an_attempt(a))
        if used >= self.planner.failover().max_attempts:
            return [
                JobMove(
                    JobState.FAILED,
                    "lost",
                    f"attempt lost ({status.message}); no attempts left",
                    fields=fields,
                )
            ]
        return [JobMove(JobState.QUEUED, "lost", f"attempt lost ({status.message}); requeued")]

    def _stop_leftover(self, job: Job, attempt: Attempt) -> None:
        """A live attempt of an ended job (its cancel's stop call failed, say, to throttling, or
        the broker restarted first): stop it again, in the background, once at a time."""
        if attempt.backend_id is None or job.id in self._inflight or attempt.id in self._stops_in_flight:
            return  # a launch in flight stops what it starts itself
        self._stops_in_flight.add(attempt.id)
        self._in_background(self._stop_again(job, attempt, attempt.backend_id))

    async def _stop_again(self, job: Job, attempt: Attempt, backend_id: str) -> None:
        try:
            adapter = self.adapters.get(attempt.site)
            if adapter is None:
                return
            try:
                await asyncio.to_thread(adapter.cancel, backend_id, attempt.token)
            except AdapterError as exc:  # the next poll or report tries again
                log.warning("stopping %s of ended job %s failed: %s", backend_id, job.id, exc)
                return
            if self.cancelled(job, attempt, f"the job is {job.state.value}; {backend_id} stopped"):
                self.store.record(
                    job.id,
                    self.clock.now(),
                    kind="terminated",
                    message=f"instance {backend_id} at {attempt.site} stopped (the job is {job.state.value})",
                    data={"attempt": attempt.id, "backend_id": backend_id},
                )
                self.capacity_changed()
        finally:
            self._stops_in_flight.discard(attempt.id)

    def _in_background(self, coro: Any) -> None:
        self._spawn(coro)

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        """Run `coro` as a task the dispatcher's stop cancels; returns it, to be waited for."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _leave_to_cloud(self, attempt: Attempt) -> None:
        """A spot instance under a reclaim notice: the cloud releases it within minutes, and
        deleting it now would take the job's last chance to save a checkpoint."""
        self.store.record(
            attempt.job_id,
            self.clock.now(),
            kind="left_to_cloud",
            message=(
                f"instance {attempt.backend_id} at {attempt.site} left for the cloud to release "
                "(spot reclaim notice): the job may save a checkpoint until then"
            ),
            data={"attempt": attempt.id, "backend_id": attempt.backend_id},
        )

    async def _terminate(self, attempt: Attempt, backend_id: str | None = None, why: str = "") -> None:
        """An agent-run attempt is over: make sure its instance (`backend_id`, else the
        attempt's own) is gone; `why` goes into the event."""
        adapter, backend_id = self.adapters.get(attempt.site), backend_id or attempt.backend_id
        if adapter is not None and backend_id is not None:
            await terminate(self.store, self.planner.health, self.clock, adapter, attempt, backend_id, why)

    # Cancellation ------------------------------------------------------------------------

    async def keep_output(self, job: Job, attempt: Attempt, adapter: Adapter) -> None:
        """The output a stopped attempt wrote becomes its job's tail, as a finished one's does: the
        poll that sees a job end brings it, but a cancelled attempt is closed here, unpolled.
        Backends that read output themselves only (local, Slurm); cloud output comes from the agent."""
        backend_id = attempt.backend_id
        if not isinstance(adapter, LogSource) or backend_id is None or is_gang_attempt(attempt):
            return
        try:
            tail = (await asyncio.to_thread(status_for, adapter, backend_id, attempt.token)).log_tail
        except (AdapterError, OSError) as exc:  # szb logs still reads the output from the backend
            log.info("output of cancelled %s not read: %s", attempt.id, exc)
            return
        self._keep_tail(job, attempt, tail)

    def _keep_tail(self, job: Job, attempt: Attempt, tail: str) -> None:
        """An ended job's stopped attempt's output becomes the job's tail (no move carries it)."""
        if tail:
            self.store.record(
                job.id,
                self.clock.now(),
                kind="terminated",
                message=f"{attempt.backend_id} at {attempt.site} stopped; the output it wrote is kept",
                data={"attempt": attempt.id, "backend_id": attempt.backend_id},
                log_tail=tail,
            )

    def cancelled(self, job: Job, attempt: Attempt, why: str | None = None) -> bool:
        """Close an attempt whose backend was told to stop, settling what it ran for (False: it
        was closed already, by its timeout say). `why` is kept as the attempt's error."""
        if self.store.get_attempt(attempt.id).state.terminal:
            return False
        status = AttemptStatus(state=AttemptState.CANCELLED, message=why or "cancelled")
        ended = self.store.update_attempt(attempt.id, self.clock.now(), state=status.state, error=why)
        log_attempt_end(log, job, ended, status)
        self.planner.settle(job, ended, status, self.store)
        return True
