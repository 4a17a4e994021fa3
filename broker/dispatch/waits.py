"""Projected on-prem waits for the live dispatcher (`burst.wait_model: projected`).

The dispatcher gathers, per on-prem partition, what `broker.burst.projection.projected_wait_s`
needs: free units; the running jobs' expected ends (start of their current run + runtime
estimate x the tenant's learned actual/estimate ratio, `broker.dispatch.runtimes`); the jobs
ahead — those pending in the backend's own queue (Slurm: the broker's and other users', in
Slurm's order as the capacity reading gives it), then the broker's waiting jobs in
the fair order (fair share, then priority and deadline), jobs about to burst left out. A pass
over the queue's head records each decision as it is made, so a job sees exactly the waiters
decided before it; a pass over new jobs only ranks them among the last whole queue and the jobs
decided since (`FairQueue.order`), every waiter takes its place in that ranking, and a new job
(as explain's) counts the waiters before its own place there. The math stays in
`broker.burst.projection`.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from broker.burst.claims import LateClaims, claim_premium
from broker.burst.inputs import demand, due_at, is_onprem, latest_start
from broker.burst.projection import NEVER_S, expected_end
from broker.burst.snapshot import PassSnapshot
from broker.decision import Action, Decision, ProjectionNote
from broker.dispatch.lines import (
    Ahead,
    CommittedBursts,
    Line,
    PartitionView,
    foreign_ends,
    keep_last,
    line_up,
)
from broker.dispatch.runtimes import LearnedRatios
from broker.model import Attempt, AttemptState, Job, JobSpec, SiteId
from broker.policy import Policy
from broker.store import JobNotFoundError, JobStore


@dataclass(frozen=True)
class _Known:
    """What a live attempt's job contributes (read from the store once per attempt)."""

    tenant: str
    units: int
    estimate_s: float
    started: datetime | None


class LiveWaits:
    """The live projection's state: partition views per snapshot, the waiters in decision order."""

    def __init__(self) -> None:
        self.ratios = LearnedRatios()
        self._known: dict[str, _Known] = {}
        self._views: dict[int, tuple[PassSnapshot, dict[str, PartitionView]]] = {}
        self._unread: dict[int, tuple[PassSnapshot, Sequence[Attempt]]] = {}
        self._latest: dict[str, PartitionView] = {}
        self.entries: dict[str, tuple[str, Ahead]] = {}
        """Job id -> (partition, ahead entry) of each waiter, in decision order."""
        self.lines: dict[str, list[Ahead]] = {}
        """Partition -> the waiters' entries in decision order (what a later job has ahead)."""
        self.positions: dict[str, list[float]] = {}
        """Partition -> each waiter's place in the fair order as last ranked, ascending along the
        line: a job counts only the waiters that stand before it."""
        self._at: dict[str, float] = {}
        """Job id -> its place as the waiter's entry has it."""
        self._sums: dict[str, tuple[int, float]] = {}
        """Partition -> (units, unit-seconds) of its line, kept as it grows (for the note)."""
        self._previous: dict[str, tuple[str, Ahead]] = {}
        """The last full pass's waiters (a head scan keeps those it skips)."""
        self._generation = 0
        self.bursts = CommittedBursts()
        """Jobs waiting to burst at their last responsible moment, per cloud site (by deadline)."""
        self.claims = LateClaims()
        """The same jobs' late claims on their on-prem partition (`broker.burst.claims`)."""
        self._seen: set[str] = set()

    # Gathering ------------------------------------------------------------------------

    def noted(self, snap: PassSnapshot, live: Sequence[Attempt]) -> None:
        """A new snapshot and the live attempts it was taken with (read when first projected on)."""
        keep_last(self._unread, id(snap), (snap, live))

    def ready(self, policy: Policy, snap: PassSnapshot, store: JobStore, queueing: frozenset[str]) -> None:
        """Build the snapshot's partition views, once, before its first projection."""
        hit = self._unread.pop(id(snap), None)
        if hit is not None and hit[0] is snap:
            self._observe(policy, snap, hit[1], store, queueing)

    def _observe(
        self,
        policy: Policy,
        snap: PassSnapshot,
        live: Sequence[Attempt],
        store: JobStore,
        queueing: frozenset[str],
    ) -> None:
        """The partition views of a snapshot from its offers and the live attempts."""
        now = snap.now
        # Capacity not read (the catalog alone): no projection there, the fluid estimate stands.
        read = {o.partition: o for o in reversed(snap.offers)  # (the first offer of a partition)
                if o.free is not None and is_onprem(policy, o.site)}
        views = {key: PartitionView(o.accelerator is not None, o.free or 0) for key, o in read.items()}
        stranded = {b for o in read.values() for b in o.stranded}  # on nodes that take no new work
        known = self._learn(live, store)
        busy: dict[str, int] = {}
        launching: dict[str, int] = {}
        pending: dict[str, dict[str, tuple[Ahead, str]]] = {}
        for attempt in live:
            key = attempt.offer.partition
            view, k = views.get(key), known.get(attempt.id)
            if view is None or k is None or attempt.backend_id in stranded:
                continue
            runtime = k.estimate_s * self.ratios.ratio(k.tenant, store, now)
            if attempt.backend_id is None:  # launching: not in the backend's free count yet
                launching[key] = launching.get(key, 0) + k.units
                view.ends.append((now.timestamp() + runtime, k.units))
            elif attempt.state == AttemptState.PENDING and attempt.site in queueing:
                pending.setdefault(key, {})[attempt.backend_id] = ((k.units, runtime), attempt.job_id)
            else:
                start = (k.started or attempt.created_at).timestamp()
                view.ends.append((expected_end(start + runtime, now.timestamp()), k.units))
                busy[key] = busy.get(key, 0) + k.units
        for key, view in views.items():
            line_up(view, read[key].queued, pending.get(key, {}))
            # Busy units no broker job accounts for (another Slurm user's work) free up when
            # their own jobs end, where the backend says; the rest when it expects capacity back.
            view.foreign = max(0, snap.capacity_total.get(key, 0) - view.free - busy.get(key, 0))
            if view.foreign:
                view.ends.extend(foreign_ends(view.foreign, read[key].releases, now.timestamp(),
                                              read[key].expected_wait_s))
            view.free = max(0, view.free - launching.get(key, 0))
        keep_last(self._views, id(snap), (snap, views))
        self._latest = views

    def _learn(self, live: Sequence[Attempt], store: JobStore) -> dict[str, _Known]:
        """Tenant, size, estimate and run start of each live attempt's job (new ones read once)."""
        out: dict[str, _Known] = {}
        unstarted = []
        for attempt in live:
            k = self._known.get(attempt.id)
            if k is None:
                try:
                    job = store.get(attempt.job_id)
                except JobNotFoundError:
                    continue
                k = _Known(job.tenant, demand(job.spec), job.spec.runtime_estimate.total_seconds(), None)
            out[attempt.id] = k
            if k.started is None and attempt.state == AttemptState.RUNNING:
                unstarted.append(attempt)
        starts = store.run_starts([a.job_id for a in unstarted]) if unstarted else {}
        for attempt in unstarted:
            began = starts.get(attempt.job_id)
            if began is not None:
                k = out[attempt.id]
                out[attempt.id] = _Known(k.tenant, k.units, k.estimate_s, began)
        self._known = out
        return out

    # Passes -----------------------------------------------------------------------------

    def begin_pass(self, *, full: bool) -> None:
        """A pass over the queue's head redraws the waiting lines in its order; a pass over
        new jobs only keeps them (new jobs go behind every earlier waiter)."""
        if full:
            self._previous, self.entries, self.lines, self._sums = self.entries, {}, {}, {}
            self.positions, self._at = {}, {}
            self._generation += 1
            for job_id in [j for j in self.bursts.where if j not in self._seen]:
                self.bursts.put(job_id, None, 0.0)  # left the queue since the last full pass
                self.claims.put(job_id, None)
            self._seen = set()

    def keep(self, job: Job, position: float) -> None:
        """A job the pass did not decide again (deep in a head scan) still waits where it did."""
        self._seen.add(job.id)
        entry = self._previous.get(job.id)
        if entry is not None:
            self._line(job.id, *entry, position)

    def record(
        self,
        job: Job,
        decision: Decision,
        policy: Policy,
        snap: PassSnapshot,
        store: JobStore,
        position: float = math.inf,
    ) -> None:
        """What this decision means for the jobs decided after it (`position`: the job's place
        in the fair order as this pass ranked it; inf: not ranked)."""
        self._seen.add(job.id)
        f = decision.facts
        committed = f.burst_in_s is not None and f.cloud_offer and decision.action == Action.WAIT
        due_s = job.created_at.timestamp() + f.max_wait_s  # as decided (over-share: 0), capped as due_at caps
        if (latest := latest_start(job.spec)) is not None:
            due_s = min(due_s, latest.timestamp())
        self.bursts.put(job.id, f.cloud_offer.split("/")[0] if committed and f.cloud_offer else None, due_s)
        offer = decision.offer
        late = claim_premium(f, policy) if committed else None
        part = offer.partition if late is not None and offer is not None else None
        self.claims.put(job.id, part, demand(job.spec), late or 0.0, job.tenant)  # on its on-prem partition
        if offer is None or not is_onprem(policy, offer.site):
            return  # a burst (or nothing) holds up no on-prem partition
        runtime = self._runtime(job.spec, job.tenant, store, snap.now)
        queued = decision.facts.onprem_expected_wait_s is not None
        if decision.action == Action.RUN and not queued:
            view = self._view(snap).get(offer.partition)
            if view is not None:  # it starts now: its units are busy until its expected end
                view.free = max(0, view.free - demand(job.spec))
                view.started(snap.now.timestamp() + runtime, demand(job.spec))
        elif decision.action == Action.RUN:  # sent to the backend's own queue (Slurm) to pend
            view = self._view(snap).get(offer.partition)
            if view is not None:  # as the next snapshot will see it: pending at the backend
                view.backend_queue.append((demand(job.spec), runtime))
                view.backend_jobs.append(job.id)
        elif decision.facts.burst_in_s is None:  # waits in the broker's queue for this partition
            self._line(job.id, offer.partition, (demand(job.spec), runtime), position)

    def _line(self, job_id: str, partition: str, entry: Ahead, position: float) -> None:
        self.entries[job_id] = (partition, entry)
        self._at[job_id] = position
        line, places = self.lines.setdefault(partition, []), self.positions.setdefault(partition, [])
        i = bisect.bisect_right(places, position)
        if i < len(places):  # ahead of waiters in the line already: lines drawn over them are redrawn
            self._generation += 1
        line.insert(i, entry)
        places.insert(i, position)
        units, unit_s = self._sums.get(partition, (0, 0.0))
        self._sums[partition] = (units + entry[0], unit_s + entry[0] * entry[1])

    def reposition(self, place: Callable[[str], float]) -> None:
        """A pass over new jobs ranked the queue again: each waiter stands at its `place` there
        (one no longer ranked, inf, keeps its own), and the lines are redrawn in that order."""
        if not self.entries:
            return
        for job_id in self.entries:
            if math.isfinite(at := place(job_id)):
                self._at[job_id] = at
        lines: dict[str, list[Ahead]] = {}
        positions: dict[str, list[float]] = {}
        for job_id in sorted(self.entries, key=self._at.__getitem__):
            partition, entry = self.entries[job_id]
            lines.setdefault(partition, []).append(entry)
            positions.setdefault(partition, []).append(self._at[job_id])
        if lines != self.lines:  # (most passes only add behind: lines drawn stay as they are)
            self._generation += 1
        self.lines, self.positions = lines, positions

    # Projection -------------------------------------------------------------------------

    def for_job(
        self,
        policy: Policy,
        spec: JobSpec,
        snap: PassSnapshot,
        store: JobStore,
        queueing: frozenset[str],
        before: int | None = None,
    ) -> dict[str, float] | None:
        """The job's projected wait per on-prem partition; None when the policy's model is fluid.

        `before`: the job's place in the fair-share order (explain); only waiters placed before
        it count. Without it the job comes after every waiter so far (a dispatch pass)."""
        if policy.burst.wait_model != "projected":
            return None
        self.ready(policy, snap, store, queueing)
        return self.project(spec, snap, before)

    def project(self, spec: JobSpec, snap: PassSnapshot, before: int | None = None) -> dict[str, float]:
        """The job's projected wait on every on-prem partition of its kind, given what is ahead."""
        need, now_s = demand(spec), snap.now.timestamp()
        out: dict[str, float] = {}
        for key, view in self._view(snap).items():
            if view.accelerated != (spec.accelerator_count > 0):
                continue
            ahead = self._ahead(key, before)
            if ahead < len(self.lines.get(key, ())):  # a place inside the line: that prefix alone
                line = Line.of(view, now_s, self._generation)
                for units, runtime in self.lines[key][:ahead]:
                    line.add(units, runtime)
            else:
                line = self._whole_line(key, view, now_s)
            wait = max(0.0, line.start(need) - now_s)  # a line drawn a moment ago starts no earlier
            out[key] = wait if math.isfinite(wait) else NEVER_S
        return out

    def for_pending(
        self, policy: Policy, job: Job, snap: PassSnapshot, store: JobStore, queueing: frozenset[str]
    ) -> dict[str, float] | None:
        """A job pending in a backend's own queue: its projected wait on the partition it pends
        in, from the running ends and the jobs pending there before it (not itself, nor those
        behind it). None when the model is fluid or the job pends in no partition seen."""
        if policy.burst.wait_model != "projected":
            return None
        self.ready(policy, snap, store, queueing)
        now_s = snap.now.timestamp()
        for key, view in self._view(snap).items():
            if job.id in view.backend_jobs:
                line = Line.of(view, now_s, self._generation, upto=view.backend_jobs.index(job.id))
                wait = max(0.0, line.start(demand(job.spec)) - now_s)
                return {key: wait if math.isfinite(wait) else NEVER_S}
        return None

    def _whole_line(self, key: str, view: PartitionView, now_s: float) -> Line:
        """The partition's whole line list-scheduled, placing only what was added since last time."""
        line = view.line
        if line is not None and line.sent < len(view.backend_queue):
            if line.applied:  # they go before the broker's waiters already placed: redo
                line = None
            else:
                for units, runtime in view.backend_queue[line.sent :]:
                    line.add(units, runtime)
                line.sent = len(view.backend_queue)
        if line is None or line.generation != self._generation:
            line = view.line = Line.of(view, now_s, self._generation)
        waiting = self.lines.get(key, ())
        for units, runtime in waiting[line.applied :]:
            line.add(units, runtime)
        line.applied = len(waiting)
        return line

    def launches_ahead(
        self, policy: Policy, spec: JobSpec, tenant: str, queued_since: datetime, job_id: str | None = None
    ) -> Mapping[SiteId, int] | None:
        """Per cloud site, the bursts committed there by jobs due before this one (None: fluid);
        `job_id`: the queued job's (None: a job asked about, behind every commitment due with it)."""
        if policy.burst.wait_model != "projected":
            return None
        return self.bursts.ahead(due_at(spec, tenant, policy, queued_since).timestamp(), job_id)

    def _ahead(self, partition: str, before: int | None) -> int:
        """How many of the partition's waiters stand before a job at place `before` (all: None)."""
        places = self.positions.get(partition, [])
        return len(places) if before is None else bisect.bisect_left(places, before)

    def explained(
        self,
        decision: Decision,
        snap: PassSnapshot,
        tenant: str,
        store: JobStore,
        before: int | None = None,
        projected: Mapping[str, float] | None = None,
    ) -> Decision:
        """The decision with where its projected on-prem wait came from (explain, job events);
        `projected`: the waits the decision was made on (`for_job`): no note for a partition
        whose wait was not projected. The note's wait is the projection, not the wait the
        decision counted (past its last responsible moment it counts a start that is not now late)."""
        partition = decision.facts.onprem_partition  # the partition the decision weighed
        if partition is None or projected is None or partition not in projected:
            return decision
        view = self._view(snap).get(partition)
        if view is None:
            return decision
        now_s = snap.now.timestamp()
        ahead = self._ahead(partition, before)
        if ahead == len(self.lines.get(partition, ())):
            ahead_units, ahead_unit_s = self._sums.get(partition, (0, 0.0))
        else:
            prefix = self.lines[partition][:ahead]
            ahead_units, ahead_unit_s = sum(u for u, _ in prefix), sum(u * r for u, r in prefix)
        note = ProjectionNote(
            partition=partition,
            wait_s=round(projected[partition]),
            free_units=view.free,
            running=view.soonest_in(now_s),
            running_jobs=len(view.ends),
            backend_queue_jobs=len(view.backend_queue),
            ahead_jobs=ahead,
            ahead_units=ahead_units,
            ahead_unit_hours=round(ahead_unit_s / 3600, 2),
            runtime_ratio=round(self.ratios.ratio(tenant, store, snap.now), 3),
        )
        return replace(decision, projection=note)

    def _view(self, snap: PassSnapshot) -> dict[str, PartitionView]:
        """The snapshot's partition views (kept as the most recently used), else the latest."""
        hit = self._views.pop(id(snap), None)
        if hit is None or hit[0] is not snap:
            return self._latest
        self._views[id(snap)] = hit
        return hit[1]

    def _runtime(self, spec: JobSpec, tenant: str, store: JobStore, now: datetime) -> float:
        return spec.runtime_estimate.total_seconds() * self.ratios.ratio(tenant, store, now)
