"""The shell around fair share: feeds the pure order with the queue and the book, remembers standings.

The dispatcher asks `order` for each pass's queue; `adjust` then applies a job's standing to
its decision (no borrowing beyond quota when the tenant may not; capacity held for a waiting
job that is owed it; an over-share tenant bursts instead of waiting, when the policy says so).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime

from broker.burst import is_onprem
from broker.burst.inputs import due_at, effective_max_wait
from broker.burst.snapshot import PassSnapshot
from broker.decision import Action, Decision, FairShareNote, ReclaimVictim
from broker.fair_reclaim import Reclaimer, Taken, bound_in_pass, quota_offer, reclaiming, run_on_quota
from broker.fair_saves import Saves
from broker.fairshare import QueuedWork, Standing, charge_factor, onprem_partitions, order, share_ratios
from broker.fairshare.book import FairShareBook, Holding, capacity_of, demand_of, units_of
from broker.fairshare.candidates import Candidates
from broker.fairshare.holds import Hold, Holds
from broker.fairshare.standing import TenantStanding, tenant_standings
from broker.model import Attempt, AttemptState, AttemptStatus, Job, JobSpec, TenantId
from broker.policy import Policy
from broker.quota_bar import quota_reason
from broker.store import JobStore
from broker.swap_live import swapped


class FairQueue:
    """Fair-share state of one scheduler: the usage book and the last order's standings."""

    def __init__(self, ticks: Callable[[], float] | None = None) -> None:
        self.book, self._ticks = FairShareBook(0.0), ticks  # (`Clock.ticks`: the reclaimer's)
        self.standings: dict[str, Standing] = {}
        self.provisional: dict[str, Standing] = {}
        """Standings of new jobs decided before the next full pass, ranked in the last whole queue
        (used to decide, never shown)."""
        self.reasons: dict[str, str] = {}
        """The last decision's summary per queued job (shown after its standing)."""
        self.heads_only = 0
        """The dispatcher's window when the last full pass read only the heads of the queue's groups
        (a tenant's jobs asking the same hardware; 0: it read every queued job)."""
        self._last: list[QueuedWork] = []
        self._new: dict[str, QueuedWork] = {}
        """Jobs decided by passes over new jobs since the last full pass: each such pass ranks its
        jobs among these and the last whole queue, as the next full pass would."""
        self._left: set[str] = set()
        """Jobs of the last whole queue that left it since (started or burst)."""
        self.candidates = Candidates()
        self.ratios: dict[str, float] = {}
        """Each active tenant's dominant share over its entitled share, as of the last order."""
        self.queued_at_backend: frozenset[str] = frozenset()
        """Live on-prem attempts pending in their backend's queue (Slurm's): they hold no unit,
        so reclaim never preempts them (that frees nothing and costs them their place)."""
        self.reclaimer = Reclaimer(ticks)
        self.holds = Holds()
        """Capacity kept for a waiting head job across passes (see `broker.fairshare.holds`)."""
        self.adopted: tuple[TenantStanding, ...] | None = None
        """On an API replica, the standings of the active scheduler's last site report."""
        self._loaded = False
        self._saves = Saves(self.book, self.reclaimer)

    def begin_term(self) -> None:
        """A scheduler's term begins (its start, or an HA re-election): its book and reclaim state
        are read again from the store at the next `observe`, not kept from an earlier term."""
        self.book, self.reclaimer = FairShareBook(0.0), Reclaimer(self._ticks)
        self._saves, self._loaded = Saves(self.book, self.reclaimer), False

    def shown(self, policy: Policy, now: datetime) -> list[TenantStanding]:
        """Each tenant's standing for `szb status` and /metrics: a replica's book is only fed for
        explain, when one is asked, so it shows the scheduler's (`adopted`) instead."""
        if self.adopted is not None:
            return list(self.adopted)
        return tenant_standings(self.book, policy, now, self.ratios)

    # Usage ---------------------------------------------------------------------------------

    def observe(self, policy: Policy, live: Sequence[Attempt], now: datetime, store: JobStore) -> None:
        """Align the book with the live attempts (adopts those a restart left, closes ended ones);
        the decayed usage of finished work is read from the store once and saved when it grew."""
        self.book.set_half_life(policy.document.fair_share.half_life.total_seconds())
        if not self._loaded:
            self._loaded = True
            self._saves.load(store)
        self._align(policy, live, now, store)
        self._saves.save(store)

    def follow(
        self, policy: Policy, live: Sequence[Attempt], queued: Sequence[Job], now: datetime, store: JobStore,
        heads_only: int = 0,
    ) -> None:
        """On an API replica (which decides nothing, so explain stands a job where the active
        scheduler would): the usage and reclaim state it saved, the live attempts and the queue's
        order, read from the store each time (`heads_only`: as the scheduler's `read_queue` cut it);
        nothing is saved from here."""
        self.heads_only = heads_only
        self.book.set_half_life(policy.document.fair_share.half_life.total_seconds())
        self._saves.load(store, mirror=True)
        self._align(policy, live, now, store)
        self.order(policy, queued, now, remember=True)

    def _align(self, policy: Policy, live: Sequence[Attempt], now: datetime, store: JobStore) -> None:
        """Adopt the live on-prem attempts the book lacks (a restart left them), close ended ones."""
        parts = onprem_partitions(policy)
        onprem = [a for a in live if a.offer.partition in parts]
        self.queued_at_backend = frozenset(a.id for a in onprem if a.state == AttemptState.PENDING)
        # One adopted while running is charged from its last start, not its sending (its wait in
        # Slurm's queue was counted as use again after each restart).
        ran = [a.job_id for a in onprem if a.id not in self.book.live and a.state == AttemptState.RUNNING]
        starts = store.run_starts(ran) if ran else {}
        for attempt in onprem:
            if attempt.id not in self.book.live:
                try:
                    job = store.get(attempt.job_id)
                except Exception:  # a job gone from the store holds nothing
                    continue
                self.started(policy, job, attempt, adopting=True, since=starts.get(attempt.job_id))
            elif attempt.state == AttemptState.RUNNING:  # (a replica is never told it launched)
                self.book.running(attempt.id, now)
        self.book.sync((a.id for a in onprem), now)

    def save_reclaim(self, store: JobStore) -> None:
        """Store reclaim's state now, before a preemption (`Saves.save_reclaim`; raises `StoreError`)."""
        self._saves.save_reclaim(store)

    def started(self, policy: Policy, job: Job, attempt: Attempt, *, adopting: bool = False,
                since: datetime | None = None) -> None:
        """The book holds an on-prem attempt, used from `since` (its sending when not known)."""
        if attempt.offer.partition in onprem_partitions(policy):
            start = max(since, attempt.created_at) if since is not None else attempt.created_at
            (self.book.adopt if adopting else self.book.started)(
                attempt.id,
                Holding(
                    job.tenant,
                    attempt.offer.partition,
                    demand_of(job.spec),
                    units_of(job.spec),
                    start,
                    start + job.spec.runtime_estimate,
                    job.spec.checkpoint.interval.total_seconds() if job.spec.checkpoint else None,
                    effective_max_wait(job.spec, job.tenant, policy).total_seconds(),
                    attempt.number - 1,
                    job.spec.resources.nodes > 1,  # a gang: never stopped for a swap
                    due_at(job.spec, job.tenant, policy, job.created_at),
                    attempt.state == AttemptState.PENDING,  # uses nothing until seen running
                ),
            )

    def launched(self, attempt_id: str, now: datetime) -> None:
        """An attempt runs: it holds its units now (reclaim may take them), and its tenant's usage
        counts it from now."""
        self.queued_at_backend -= {attempt_id}
        self.book.running(attempt_id, now)

    def ended(self, attempt: Attempt, now: datetime, status: AttemptStatus | None = None) -> None:
        """The attempt is over. One the book still had queued at its backend that ran unseen
        (between two polls, or while the broker was down) is charged from its backend start (its
        sending when the backend does not say), not dropped as never run."""
        if status is not None:
            ran = status.state == AttemptState.SUCCEEDED or status.exit_code is not None
            began = status.started_at or (attempt.created_at if ran else None)
            if began is not None:
                self.book.running(attempt.id, min(began, now))
            now = min(status.stopped_at or now, now)
        self.book.ended(attempt.id, now)

    # Order ---------------------------------------------------------------------------------

    def order(self, policy: Policy, jobs: Sequence[Job], now: datetime, *, remember: bool) -> list[Job]:
        """The jobs in fair-share order; `remember` keeps their standings (a pass over the whole queue)."""
        work = [
            QueuedWork(
                job_id=j.id,
                tenant=j.tenant,
                priority=j.spec.priority,
                created_at=j.created_at,
                demand=demand_of(j.spec),
                units=units_of(j.spec),
                partitions=self.candidates(policy, j.spec, j.tenant),
                due=due_at(j.spec, j.tenant, policy, j.created_at),
            )
            for j in jobs
        ]
        by_id = {j.id: j for j in jobs}
        if remember:
            standings = self._run(policy, work, now)
            self.holds = Holds()  # a pass over the queue's head names the holders again
            self.provisional = {}
            self.standings = {s.job_id: s for s in standings}
            self.reasons = {k: v for k, v in self.reasons.items() if k in self.standings}
            self._last, self._new, self._left = work, {}, set()
        else:
            # New jobs stand where they would in the next full pass (as explain's `preview` puts a
            # job): among the last whole queue and the jobs decided since, their place, share
            # ratios and over-share. Each job ranked takes its new place (one behind a new job
            # counts it ahead: `LiveWaits.reposition`).
            self._new.update((w.job_id, w) for w in work)
            ranked = self._run(policy, self._since(), now)
            for s in ranked:
                if s.job_id in self.standings:
                    self.standings[s.job_id] = s
                elif s.job_id in self._new:
                    self.provisional[s.job_id] = s
            standings = [s for s in ranked if s.job_id in by_id]
        return [by_id[s.job_id] for s in standings]  # type: ignore[index]

    def _since(self) -> list[QueuedWork]:
        """The last whole queue and the jobs decided since (by passes over new jobs only)."""
        gone = self._new.keys() | self._left
        return [*(w for w in self._last if w.job_id not in gone), *self._new.values()]

    def place(self, job_id: str) -> float:
        """The job's place in the fair order as last ranked (inf: not ranked)."""
        st = self.standings.get(job_id) or self.provisional.get(job_id)
        return math.inf if st is None else st.position

    def _run(
        self, policy: Policy, work: Sequence[QueuedWork], now: datetime, *, keep: bool = True
    ) -> list[Standing]:
        """`work` in fair-share order; `keep`: its share ratios become the queue's (not for explain)."""
        half_life = policy.document.fair_share.half_life.total_seconds()
        states = self.book.tenant_states(policy, now, {w.tenant for w in work})
        capacity = capacity_of(policy)
        if keep:
            active = {w.tenant for w in work} | {h.tenant for h in self.book.live.values()}
            self.ratios = share_ratios(states, active, capacity)
        return order(work, states, capacity, charge=charge_factor(half_life))

    def forget(self, job_id: str) -> None:
        self.holds.drop_unless(gone=job_id)
        self.standings.pop(job_id, None)
        self.provisional.pop(job_id, None)
        self._new.pop(job_id, None)
        self._left.add(job_id)
        self.reasons.pop(job_id, None)

    def describe(self, job_id: str, stored: str = "") -> str | None:
        """Why the job waits (the last decision's reason, else `stored`), then its standing, for a
        person reading `szb list` or `szb get`. The job's stored message changes only when the
        reason's wording does, not its numbers, so the last decision's reason comes first."""
        st = self.standings.get(job_id) or self.provisional.get(job_id)
        if st is None:
            if not self.heads_only:
                return None
            behind = (f"not yet decided again: with more than {self.heads_only} jobs queued, each pass "
                      "decides the first (by priority, then age) of each tenant's jobs asking the same "
                      "hardware, and this one is further back")
            return f"{stored}; {behind}" if stored else behind
        reason = self.reasons.get(job_id) or stored
        return f"{reason}; {st.text()}" if reason else st.text()

    def preview(self, policy: Policy, spec: JobSpec, tenant: TenantId, now: datetime) -> Standing:
        """Where a job submitted now would stand in the last known queue (for explain)."""
        me = QueuedWork(
            job_id="(this job)",
            tenant=tenant,
            priority=spec.priority,
            created_at=now,
            demand=demand_of(spec),
            units=units_of(spec),
            partitions=self.candidates(policy, spec, tenant),
            due=due_at(spec, tenant, policy, now),
        )
        # What-if only: the dispatcher reads `ratios` between a pass's decisions (firm deadlines,
        # late claims, reclaim), and a job that was never submitted must not count as active there.
        standings = self._run(policy, [*self._since(), me], now, keep=False)
        return next(s for s in standings if s.job_id == me.job_id)

    # Decisions -----------------------------------------------------------------------------

    def over_share(self, policy: Policy, job: Job) -> bool:
        """The tenant is so far over its share that the policy has its jobs burst rather than wait."""
        limit = policy.document.fair_share.over_share_burst_ratio
        st = self.standings.get(job.id) or self.provisional.get(job.id)
        return limit is not None and st is not None and not st.in_quota and st.ratio > limit

    def adjust(self, policy: Policy, job: Job, decision: Decision, snap: PassSnapshot) -> Decision:
        """Apply the job's standing to its decision (see the module docstring)."""
        st = self.standings.get(job.id) or self.provisional.get(job.id)
        if st is None:
            return decision
        if st.in_quota and st.may_run_onprem:  # its quota's partition has room: no waiting elsewhere
            decision = run_on_quota(policy, job.tenant, job.spec, decision, snap)
        offer = decision.offer
        onprem = offer is not None and is_onprem(policy, offer.site)
        fair = FairShareNote(st.position, st.in_quota, round(st.ratio, 3), st.text(), st.tenant_position)
        reclaim: tuple[ReclaimVictim, ...] = ()
        if decision.action == Action.RUN and onprem and not st.may_run_onprem and offer is not None:
            key = offer.partition
            snap.claimed[key] = max(0, snap.claimed.get(key, 0) - units_of(job.spec))
            why = quota_reason(policy, job.tenant, units_of(job.spec), key)
            self.reasons[job.id] = why  # szb get says what the event says
            return replace(decision, action=Action.WAIT, reasons=(why,), fair_share=fair)
        if decision.action == Action.WAIT or (onprem and bound_in_pass(decision, job.spec, snap)):
            taken = self._reclaim(policy, job, st, decision, snap)
            reclaim = taken.victims
            if taken.reason:  # preempting: it starts once they stop, not when the projection has it
                decision = reclaiming(decision, taken.reason)
        if onprem and (kept := self.reclaimer.keep_off(decision, job.id, units_of(job.spec), snap)):
            decision = kept  # units reclaimed for another job: it may not queue for them ahead of it
        if onprem and decision.action == Action.RUN:
            snap.running_jobs.add(job.id)
        if decision.action == Action.WAIT:
            if onprem and offer is not None:  # (a pass over the queue's head counts the hold
                # against every job after its holder; one over new jobs, as `held_for`)
                mine = (job.id, job.tenant, units_of(job.spec))
                decision = self.holds.named(decision, offer.partition, mine, self.ratios,
                                            whole_pass=job.id not in self.provisional)
            self.reasons[job.id] = decision.summary
        if (
            decision.action == Action.WAIT
            and onprem
            and offer is not None
            and offer.free is not None
            and policy.document.fair_share.hold_for_under_share
            and (st.in_quota or st.owed or (st.ratio < 1.0 and st.may_run_onprem))
        ):
            # Freed capacity is kept for this job: later (over-share, borrowed) jobs of the pass
            # must not backfill it, or a large job of a small tenant would wait for ever. Not for
            # a job that may not borrow: it waits for its own quota, never for idle capacity.
            key = offer.partition
            free = offer.free - snap.claimed.get(key, 0)
            if free >= units_of(job.spec):  # it could start, and yields to a late job: no hold
                return replace(decision, fair_share=fair, reclaim=reclaim)
            if free > 0:
                snap.claimed[key] = snap.claimed.get(key, 0) + min(free, units_of(job.spec))
            # Passes that decide only new jobs do not see this one: the hold is remembered.
            self.holds.claim(key, Hold(job.id, job.tenant, units_of(job.spec), st.in_quota), self.place)
        decision = replace(decision, fair_share=fair, reclaim=reclaim)
        return swapped(
            self.book, self.reclaimer, policy, job.id, job.tenant, job.spec, decision, snap,
            may_run_onprem=st.may_run_onprem, ratios=self.ratios,
        )

    def barred(self, policy: Policy, job: Job, now: datetime) -> dict[str, float] | None:
        """Borrowed work of a tenant that may not borrow: per on-prem partition, the seconds until
        its own quota there has room for the job (its decision waits for that, or bursts as its
        max_wait says, not for idle capacity it may not take). None for every other job."""
        st = self.standings.get(job.id) or self.provisional.get(job.id)
        return self.barred_at(policy, st, job.tenant, job.spec, now)

    def barred_at(
        self, policy: Policy, st: Standing | None, tenant: str, spec: JobSpec, now: datetime
    ) -> dict[str, float] | None:
        """`barred` for a job standing at `st` (explain's preview has no job yet)."""
        if st is None or st.may_run_onprem:
            return None
        return self.book.quota_waits(policy, tenant, units_of(spec), now)

    def held_for(self, policy: Policy, job: Job, now: datetime) -> dict[str, int]:
        """Units a job decided among new jobs only must leave to a waiting job ahead of it."""
        if job.id not in self.provisional:
            return {}  # a pass over the queue's head: the holders claimed their capacity in it
        return self.book.held_for(self.holds, policy, now, job.id, job.tenant)

    # Reclaim -------------------------------------------------------------------------------

    def _reclaim(
        self, policy: Policy, job: Job, st: Standing, decision: Decision, snap: PassSnapshot
    ) -> Taken:
        """`reclaim_for` in a pass. A job bound for its backend's queue claimed its units when it
        was decided; they are not free, so reclaim counts without them (and they stay claimed
        only if it is sent on, reclaiming nothing)."""
        if decision.action != Action.RUN or decision.offer is None:
            return self.reclaim_for(policy, job.tenant, job.spec, st, decision, snap)
        key, units = decision.offer.partition, units_of(job.spec)
        claimed = snap.claimed.get(key, 0)
        snap.claimed[key] = snap.claimed_by_others(key, units)
        taken = self.reclaim_for(policy, job.tenant, job.spec, st, decision, snap)
        if taken.reason is None:
            snap.claimed[key] = claimed
        return taken

    def reclaim_for(
        self,
        policy: Policy,
        tenant: str,
        spec: JobSpec,
        st: Standing,
        decision: Decision,
        snap: PassSnapshot,
        *,
        commit: bool = True,
    ) -> Taken:
        """The borrowed work preempted for a job within its quota that waits on-prem, or why none
        is (`commit` False: only say which, as explain does; nothing is preempted or booked)."""
        offer = quota_offer(policy, tenant, decision)
        if not st.in_quota or offer is None or offer.free is None or not is_onprem(policy, offer.site):
            return Taken()
        free = offer.free - snap.claimed.get(offer.partition, 0)
        owner = (tenant, units_of(spec))
        return self.reclaimer.take(
            policy, self.book, self.ratios, owner, offer.partition, free, snap.now,
            for_job=st.job_id, commit=commit, not_holding=self.queued_at_backend - snap.started,
        )
