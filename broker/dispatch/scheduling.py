"""One scheduling pass: which queued jobs to decide, on which snapshot, and acting on each decision."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from datetime import datetime
from typing import Any

from broker.burst.inputs import deadline_missed
from broker.burst.snapshot import PassSnapshot
from broker.decision import Action, Decision
from broker.dispatch.kept_stops import KeptStops
from broker.dispatch.launch import Launching
from broker.dispatch.preempt import preempt
from broker.dispatch.queue_read import read_queue
from broker.dispatch.records import audit_data, decision_fields, gist
from broker.dispatch.stop_first import jobs_still_stopping
from broker.dispatch.withdraw_reclaim import withdraw_beside
from broker.fairshare import lowered_priority
from broker.model import AttemptState, Job, JobId, JobState, SiteId
from broker.serde_decision import decision_data, reclaim_json
from broker.store import JobNotFoundError, StoreError

log = logging.getLogger(__name__)

DECISIONS_PER_SLICE = 10
HEAD_SCAN_WAITS = 64
"""A head scan (after capacity frees) stops deciding after this many waits in a row."""
FLOOD_SETTLE_S = 0.03
"""A new-jobs pass waits until submissions pause this long…"""
FLOOD_MAX_DELAY_S = 1.0
"""…but never delays the first new job's decision longer than this…"""
FLOOD_MAX_PENDING = 5000
"""…or lets more than this many undecided jobs pile up."""
ANSWER_WAIT_S = 2.0
"""How long an RPC waits for the backends' fresh offers before answering on the last ones."""

RAN_THEN_REQUEUED = (AttemptState.PREEMPTED, AttemptState.LOST)
"""Attempts that got going and ended without ending their job, which was queued again."""

Waiting = list[tuple[JobId, str, dict[str, Any], str]]


class Scheduling(Launching):
    """The part of the dispatcher that decides queued jobs; mixed into `Dispatcher`."""

    _kick: asyncio.Event
    _dirty: bool
    _full: bool
    _new_jobs: dict[JobId, Job]
    _last_submit: float
    _first_new: float
    _last_full_scan: float
    _waiting_reason: dict[JobId, str]
    _snap: PassSnapshot | None
    _snap_at: float
    _stopping: bool
    _kept_stops: KeptStops
    _queue_cut: bool
    _wake_at: float | None = None
    """When a full pass is due for a job's last responsible moment (loop time; None: none set)."""

    async def _schedule(self) -> None:
        loop_now = asyncio.get_running_loop().time()
        picked = await self._pick_jobs(loop_now)
        if picked is None:
            return
        queued, head_only, new_only = picked
        queued = [j for j in queued if j.id not in self._inflight]
        if not queued:
            return
        now = self.clock.now()
        pass_started = time.perf_counter()
        # A snapshot (adapters asked for capacity, prices) is reused by passes that only add
        # new jobs, until it is a poll interval old or something freed or changed capacity.
        # (Held here: something freed during an await below drops `self._snap` for the next pass.)
        snap = self._snap
        if snap is None or loop_now - self._snap_at >= self.settings.poll_interval_s:
            live = self.store.live_attempts()
            snap = self._snap = await self.planner.read_snapshot(now, live, wait_s=None)
            self._snap_at = loop_now
            # (An attempt that ended during the reading, a cancel, is not adopted again: the book
            # never reopens an ended attempt, `FairShareBook.adopt`.)
            self.planner.observe_live(live, now, self.store)
            await self._check_kept_stops()
        queued, head_only = self._join_late(queued, head_only)
        # Across tenants by weighted dominant share (quota work first), then priority and age.
        queued = self.planner.order_queue(queued, now, full=not new_only)
        snap.now = now
        try:
            await self._decide_queue(queued, snap, head_only, now)
        finally:
            self.metrics.dispatch_pass_seconds.observe(time.perf_counter() - pass_started)

    async def _pick_jobs(self, loop_now: float) -> tuple[list[Job], set[JobId] | None, bool] | None:
        """This pass's jobs, the head scan's new ones (None: decide all), and whether only new ones."""
        if loop_now - self._last_full_scan >= self.settings.requeue_scan_s:
            self._full = True
        # Freed capacity can only start jobs at the head of the queue (deeper jobs' waits only
        # shrink, so none of them newly needs to burst): a head scan stops after a run of
        # waits. Periodic and policy-change scans decide every queued job.
        if self._full or self._dirty:
            head_only: set[JobId] | None = None
            if self._full:
                self._last_full_scan = loop_now
            else:
                head_only = set(self._new_jobs)
            self._full = self._dirty = False
            self._new_jobs.clear()
            queued = await self._queued_jobs()
            if head_only is None:
                queued = [self._keep_granted(j) for j in queued]  # after a reload took a grant back
                # Forget the waiting reasons of jobs that left the queue.
                still = {j.id for j in queued}
                self._waiting_reason = {k: v for k, v in self._waiting_reason.items() if k in still}
                self._release_bookings_left(still)
            return queued, head_only, False
        if not self._new_jobs:
            return None
        # During a flood of submissions, let them land first (they are durable already)
        # and decide them together a moment later.
        if (
            len(self._new_jobs) > 1
            and loop_now - self._last_submit < FLOOD_SETTLE_S
            and len(self._new_jobs) < FLOOD_MAX_PENDING
            and loop_now - self._first_new < FLOOD_MAX_DELAY_S
        ):
            asyncio.get_running_loop().call_later(FLOOD_SETTLE_S, self._kick.set)
            return None
        new, self._new_jobs = self._new_jobs, {}
        return [j for j in new.values() if j.state == JobState.QUEUED], None, True

    def _release_bookings_left(self, queued: set[JobId]) -> None:
        """Units reclaimed for a job that ended without running on them (cancelled, failed) are
        no longer kept off every other job; one pending in its backend's queue keeps them."""
        reclaimer = self.planner.reclaimer
        for job_id in reclaimer.booked_jobs() - queued:
            try:
                state = self.store.get(JobId(job_id)).state
            except JobNotFoundError:
                state = JobState.CANCELLED
            if state.terminal or state == JobState.RUNNING:
                reclaimer.release(job_id)

    def _join_late(
        self, queued: list[Job], head_only: set[JobId] | None
    ) -> tuple[list[Job], set[JobId] | None]:
        """Add the jobs submitted while this pass read its queue and capacity.

        Their create time is already past, so leaving them to the next pass would let the work
        ahead of them in fair-share order take capacity this pass frees first."""
        if not self._new_jobs:
            return queued, head_only
        late, self._new_jobs = self._new_jobs, {}
        have = {j.id for j in queued}
        skip = have | set(self._inflight)
        joined = [j for j in late.values() if j.id not in skip and j.state == JobState.QUEUED]
        if head_only is not None:
            head_only = head_only | {j.id for j in joined}
        return queued + joined, head_only

    async def _decide_queue(
        self, queued: list[Job], snap: PassSnapshot, head_only: set[JobId] | None, now: datetime
    ) -> None:
        waiting: Waiting = []
        waits_in_a_row = 0
        stopping = jobs_still_stopping(self.planner.reclaimer, self.store, now)
        for n, job in enumerate(queued, start=1):
            if head_only is not None and waits_in_a_row >= HEAD_SCAN_WAITS and job.id not in head_only:
                self.planner.still_waiting(job)
                continue
            if job.id in stopping:  # its preempted attempt still runs: not started twice
                self.planner.still_waiting(job)
                self._note_waiting(job.id, stopping[job.id], {}, waiting)
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
            self._act(job, decision, snap, waiting, now)
            if decision.action == Action.WAIT and decision.facts.burst_in_s is not None:
                self._wake_for(decision.facts.burst_in_s)
        self._flush_waiting(waiting, now)

    def _wake_for(self, in_s: float) -> None:
        """A full pass once `in_s` is up: a job bursts at its last responsible moment, not at the
        next periodic scan (up to `requeue_scan_s` later, past its max_wait). At most one per 2 s."""
        loop = asyncio.get_running_loop()
        at = max(loop.time() + max(0.0, in_s) + 0.5, self._last_full_scan + 2.0)
        if self._wake_at is not None and loop.time() < self._wake_at <= at:
            return  # (an earlier pass is due already; it sets the next one)
        self._wake_at = at
        loop.call_at(at, self._due_pass)

    def _due_pass(self) -> None:
        self._wake_at = None
        self._full = True
        self._kick.set()

    def _act(self, job: Job, decision: Decision, snap: PassSnapshot, waiting: Waiting, now: datetime) -> None:
        """Carry out one decision: start, reject, give up, or record why the job waits."""
        if decision.action == Action.RUN and decision.offer is not None:
            self._waiting_reason.pop(job.id, None)
            # The pass's next decision reads the tenant's money again, with this reservation
            # (`decide_in_pass` dropped it from the snapshot).
            site = SiteId(decision.offer.site)
            if (trial := self.planner.begin_trial(site)) is not None:
                snap.unhealthy = {**snap.unhealthy, site: trial}  # the pass's later jobs wait for the trial
            self._start(job, decision)
        elif decision.action == Action.REJECT:
            self._waiting_reason.pop(job.id, None)
            log.info("job rejected: %s", decision.summary, extra=decision_fields(job, decision, "rejected"))
            self.store.transition(
                job.id,
                JobState.FAILED,
                now,
                kind="rejected",
                message=decision.summary,
                data={**decision_data(decision), **audit_data(decision)},
                policy_hash=decision.policy_hash,
                expect=JobState.QUEUED,
            )
        elif (why := self._give_up_reason(job, now)) is not None:
            self._waiting_reason.pop(job.id, None)
            log.info("job gave up: %s", why, extra=decision_fields(job, decision, "gave_up"))
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
            self._wait(job, decision, waiting)

    def _wait(self, job: Job, decision: Decision, waiting: Waiting) -> None:
        """The job stays queued: reclaim quota if fair share asks, and note a changed reason."""
        if decision.reclaim:
            self._reclaim(job, reclaim_json(decision))
        reason = decision.summary or "waiting for capacity"
        if self._note_waiting(job.id, reason, decision_data(decision), waiting, decision.policy_hash):
            log.info("job waits: %s", reason, extra=decision_fields(job, decision, "waiting"))

    def _note_waiting(
        self, job_id: JobId, reason: str, data: dict[str, Any], waiting: Waiting, policy_hash: str = ""
    ) -> bool:
        """Record a new waiting event only when the reason changes, not its numbers (True: it did)."""
        said = gist(reason)
        if self._waiting_reason.get(job_id) == said:
            return False
        self._waiting_reason[job_id] = said
        waiting.append((job_id, reason, data, policy_hash or self.planner.policy.hash))
        return True

    def _reclaim(self, owner: Job, victims: list[dict[str, Any]]) -> None:
        """Fair share asked to preempt borrowed work for this job's quota (`reclaim_json`): do it
        in the background."""
        try:  # the units booked to the owner's job are stored before any victim is touched
            self.planner.fair.save_reclaim(self.store)
        except StoreError as exc:  # the next pass saves them (a fenced-out scheduler cannot stop victims)
            log.warning("reclaim bookings not saved before preempting for job %s: %s", owner.id, exc)
        stopping = {str(v["attempt"]) for v in victims} - self._stops_in_flight
        self._stops_in_flight |= stopping  # the reconciler leaves them to their graceful stop
        self._in_background(self._preempting(stopping, victims, owner))
        self._in_background(self._withdrawing_beside(owner, victims))

    async def _withdrawing_beside(self, owner: Job, victims: list[dict[str, Any]]) -> None:
        """What pends at the backend on the reclaimed partition would take the freed units first:
        back to the broker's queue with it (`withdraw_beside`), to be decided again."""
        try:
            args = (self.store, self.planner, owner, victims, self.adapters, self.clock)
            beside = await withdraw_beside(*args)
        except StoreError as exc:  # it stays in the backend's queue
            log.warning("jobs pending beside reclaim for job %s not withdrawn: %s", owner.id, exc)
            return
        if beside:  # (kept off the booked units by the decision)
            self._dirty = True
            self._kick.set()

    async def _preempting(self, stopping: set[str], victims: list[dict[str, Any]], owner: Job) -> None:
        try:
            await preempt(
                victims,
                owner,
                store=self.store,
                adapters=self.adapters,
                planner=self.planner,
                clock=self.clock,
                grace_s=self.planner.policy.document.fair_share.reclaim.grace.total_seconds(),
                on_freed=self.capacity_changed,
                on_stopped=self._victim_stopped,
                record=self.apply_status,
                lost=lambda site, tenant, unit_s: self.metrics.reclaim_lost.labels(site, tenant).inc(unit_s),
            )
        finally:
            self._stops_in_flight -= stopping

    async def _check_kept_stops(self) -> None:
        """Read the kept bookings' victims not seen stopped (`KeptStops.check`)."""
        await self._kept_stops.check(self.planner.reclaimer, self.store, self.adapters, self.clock,
                                     self._victim_stopped, self._in_background, self._stops_in_flight)

    def _victim_stopped(self, attempt_id: str) -> None:
        """A preempted attempt stopped: its units, kept for the owner's job until now, read free."""
        self.planner.reclaimer.stopped(attempt_id, self.clock.now())
        self.capacity_changed()

    async def current_snapshot(self) -> PassSnapshot:
        """The snapshot the next decision is made on: this pass's (claims and backlog included)
        while it is fresh, else a new one, as a pass would take it (never stored here).

        For RPCs (explain, offers): a backend that does not answer within `ANSWER_WAIT_S`
        leaves its last reading in place rather than holding up the answer."""
        loop_now = asyncio.get_running_loop().time()
        now = self.clock.now()
        if self._snap is not None and loop_now - self._snap_at < self.settings.poll_interval_s:
            # (the drains as of now: an undrain is placeable at once, not after the pass)
            return dataclasses.replace(self._snap, now=now, drained=self.planner.health.drained())
        live = self.store.live_attempts()
        return await self.planner.read_snapshot(now, live, wait_s=ANSWER_WAIT_S)

    def _keep_granted(self, job: Job) -> Job:
        """A queued job whose priority its tenant is no longer granted (a reload took it back)
        drops to the highest it is granted below it, with an event saying so."""
        lowered = lowered_priority(self.planner.policy, job.tenant, job.spec.priority)
        if lowered is None:
            return job
        to, why = lowered
        was = job.spec.priority
        spec = job.spec.model_copy(update={"priority": to})
        try:
            job = self.store.record(
                job.id, self.clock.now(), kind="priority_lowered",
                message=f"priority lowered from {was.value} to {to.value}: {why}",
                data={"from": was.value, "to": to.value}, spec=spec.model_dump_json(),
            )
        except StoreError as exc:  # decided at its old priority this pass; the next full pass retries
            log.warning("job %s: priority not lowered: %s", job.id, exc)
            return job
        log.info("job %s: priority lowered from %s to %s (no longer granted)", job.id, was.value, to.value,
                 extra={"job_id": job.id, "tenant": job.tenant})
        return job

    async def _queued_jobs(self) -> list[Job]:
        """The queued jobs a pass decides (`read_queue`), read a page at a time so a deep queue
        never stalls the RPCs; says in the log when the queue gets deeper than the window, once."""
        window = self.settings.queue_window
        jobs, cut = await read_queue(self.store, window)
        if cut and not self._queue_cut:
            log.info("more than %d jobs queued: each pass decides the first jobs (by priority, then age) "
                     "of each tenant's groups of jobs asking the same hardware, %d jobs now; the others "
                     "as these leave the queue", window, len(jobs))
        elif not cut and self._queue_cut:
            log.info("%d jobs queued: each pass decides all of them again", len(jobs))
        self._queue_cut = cut
        self.planner.fair.heads_only = window if cut else 0
        return jobs

    def _flush_waiting(self, waiting: Waiting, now: datetime) -> None:
        if waiting:
            self.store.record_many(
                [(job_id, "waiting", reason, data) for job_id, reason, data, _ in waiting], now
            )
            waiting.clear()

    def _give_up_reason(self, job: Job, now: datetime) -> str | None:
        """A waiting job fails when its deadline can no longer be met, or its attempts keep failing."""
        missed = deadline_missed(job.spec, now)
        if missed is not None:
            return missed
        plan = self.planner.failover()
        if not job.attempts or (now - job.created_at).total_seconds() <= plan.give_up_after_s:
            return None
        # (One only withdrawn from a backend's queue, ended broker-side, is no failed attempt.)
        tries = [a for a in self.store.attempts_for(job.id) if not a.broker_side]
        if not tries:
            return None
        since, after = job.created_at, "submission"
        ran = [a for a in tries if a.state in RAN_THEN_REQUEUED]
        if ran:  # the deadline bounds starting the job (again), not how long it may live
            since, after = ran[-1].updated_at, f"attempt {ran[-1].number} was {ran[-1].state.value.lower()}"
        if (now - since).total_seconds() <= plan.give_up_after_s:
            return None
        return (
            f"gave up: not started {plan.give_up_after_s / 3600:.1f} h after {after} "
            f"despite {len(tries)} attempt(s)"
        )
