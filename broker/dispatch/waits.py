"""Projected on-prem waits for the live dispatcher (`burst.wait_model: projected`).

The dispatcher gathers, per on-prem partition, what `broker.burst.projection.projected_wait_s`
needs: free units; the running jobs' expected ends (start of their current run + runtime
estimate x the tenant's learned actual/estimate ratio, `broker.dispatch.runtimes`); the jobs
ahead — those pending in the backend's own queue (Slurm), then the broker's waiting jobs in
the order the dispatcher decides them (fair share, then priority and deadline), jobs about to
burst left out. A pass over the queue's head records each decision as it is made, so a job
sees exactly the waiters decided before it; a pass over new jobs only puts them behind every
earlier waiter, as the dispatcher does. The math stays in `broker.burst.projection`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from broker.burst.inputs import demand, effective_max_wait, is_onprem
from broker.burst.projection import projected_wait_s
from broker.burst.snapshot import PassSnapshot
from broker.decision import Action, Decision, ProjectionNote
from broker.dispatch.runtimes import LearnedRatios
from broker.model import Attempt, AttemptState, Job, JobSpec
from broker.policy import Policy
from broker.store import JobNotFoundError, JobStore

Ahead = tuple[int, float]
"""(units, expected runtime seconds) of a job that starts before the one projected."""


@dataclass
class PartitionView:
    """One on-prem partition as a snapshot saw it, plus this snapshot's own starts."""

    accelerated: bool
    free: int
    ends: list[tuple[float, int]] = field(default_factory=list)
    """(expected end, units) of running and launching jobs (as epoch seconds)."""
    backend_queue: list[Ahead] = field(default_factory=list)
    """Broker jobs pending in the backend's own queue (Slurm): ahead of every broker waiter."""
    foreign: int = 0
    """Units busy with work the broker did not start (their ends: the backend's own estimate)."""


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
        self._previous: dict[str, tuple[str, Ahead]] = {}

    # Gathering ------------------------------------------------------------------------

    def noted(self, snap: PassSnapshot, live: Sequence[Attempt]) -> None:
        """A new snapshot and the live attempts it was taken with (read when first projected on)."""
        if len(self._unread) > 8:
            self._unread.clear()
        self._unread[id(snap)] = (snap, live)

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
        views: dict[str, PartitionView] = {}
        waits: dict[str, float] = {}
        for offer in snap.offers:
            if is_onprem(policy, offer.site) and offer.partition not in views:
                views[offer.partition] = PartitionView(offer.accelerator is not None, offer.free or 0)
                waits[offer.partition] = offer.expected_wait_s
        known = self._learn(live, store)
        busy: dict[str, int] = {}
        launching: dict[str, int] = {}
        for attempt in live:
            key = attempt.offer.partition
            view, k = views.get(key), known.get(attempt.id)
            if view is None or k is None:
                continue
            runtime = k.estimate_s * self.ratios.ratio(k.tenant, store, now)
            if attempt.backend_id is None:  # launching: not in the backend's free count yet
                launching[key] = launching.get(key, 0) + k.units
                view.ends.append((now.timestamp() + runtime, k.units))
            elif attempt.state == AttemptState.PENDING and attempt.site in queueing:
                view.backend_queue.append((k.units, runtime))
            else:
                start = (k.started or attempt.created_at).timestamp()
                view.ends.append((max(now.timestamp(), start + runtime), k.units))
                busy[key] = busy.get(key, 0) + k.units
        for key, view in views.items():
            # Busy units no broker job accounts for (another Slurm user's work) free up when
            # the backend itself expects capacity back.
            view.foreign = max(0, snap.capacity_total.get(key, 0) - view.free - busy.get(key, 0))
            if view.foreign:
                view.ends.append((now.timestamp() + waits[key], view.foreign))
            view.free = max(0, view.free - launching.get(key, 0))
        if len(self._views) > 8:
            self._views.clear()
        self._views[id(snap)] = (snap, views)
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
            self._previous, self.entries, self.lines = self.entries, {}, {}

    def keep(self, job: Job) -> None:
        """A job the pass did not decide again (deep in a head scan) still waits where it did."""
        entry = self._previous.get(job.id)
        if entry is not None:
            self._line(job.id, *entry)

    def record(
        self, job: Job, decision: Decision, policy: Policy, snap: PassSnapshot, store: JobStore
    ) -> None:
        """What this decision means for the jobs decided after it."""
        offer = decision.offer
        if offer is None or not is_onprem(policy, offer.site):
            return  # a burst (or nothing) holds up no on-prem partition
        runtime = self._runtime(job.spec, job.tenant, store, snap.now)
        queued = decision.facts.onprem_expected_wait_s is not None
        if decision.action == Action.RUN and not queued:
            view = self._view(snap).get(offer.partition)
            if view is not None:  # it starts now: its units are busy until its expected end
                view.free = max(0, view.free - demand(job.spec))
                view.ends.append((snap.now.timestamp() + runtime, demand(job.spec)))
        elif decision.facts.burst_in_s is None:  # waits (here or in the backend's queue)
            self._line(job.id, offer.partition, (demand(job.spec), runtime))

    def _line(self, job_id: str, partition: str, entry: Ahead) -> None:
        self.entries[job_id] = (partition, entry)
        self.lines.setdefault(partition, []).append(entry)

    # Projection -------------------------------------------------------------------------

    def for_job(
        self,
        policy: Policy,
        spec: JobSpec,
        tenant: str,
        queued_since: datetime,
        snap: PassSnapshot,
        store: JobStore,
        queueing: frozenset[str],
    ) -> dict[str, float] | None:
        """The job's projected wait per on-prem partition; None when the policy's model is fluid."""
        if policy.burst.wait_model != "projected":
            return None
        self.ready(policy, snap, store, queueing)
        waited = (snap.now - queued_since).total_seconds()
        remaining = max(0.0, effective_max_wait(spec, tenant, policy).total_seconds() - waited)
        return self.project(spec, snap, remaining)

    def project(self, spec: JobSpec, snap: PassSnapshot, remaining_s: float) -> dict[str, float]:
        """The job's projected wait on every on-prem partition of its kind, given what is ahead."""
        need, now_s = demand(spec), snap.now.timestamp()
        give_up = max(2 * remaining_s, remaining_s + 3600.0)
        out: dict[str, float] = {}
        for key, view in self._view(snap).items():
            if view.accelerated != (spec.accelerator_count > 0):
                continue
            ahead: Iterable[Ahead] = itertools.chain(view.backend_queue, self.lines.get(key, ()))
            wait = projected_wait_s(view.free, view.ends, ahead, need, now_s, give_up_after_s=give_up)
            out[key] = wait if math.isfinite(wait) else 1e9
        return out

    def explained(self, decision: Decision, snap: PassSnapshot, tenant: str, store: JobStore) -> Decision:
        """The decision with where its projected on-prem wait came from (for `szb explain`)."""
        site, wait = decision.facts.onprem_site, decision.facts.onprem_expected_wait_s
        offer = decision.offer
        partition = offer.partition if offer is not None and offer.site == site else None
        if partition is None and site is not None:
            partition = next((k for k in self._view(snap) if k.startswith(f"{site}/")), None)
        view = self._view(snap).get(partition or "")
        if view is None or partition is None:
            return decision
        now_s = snap.now.timestamp()
        line = self.lines.get(partition, [])
        note = ProjectionNote(
            partition=partition,
            wait_s=round(wait or 0.0),
            free_units=view.free,
            running=tuple((u, round(max(0.0, e - now_s))) for e, u in sorted(view.ends)[:10]),
            running_jobs=len(view.ends),
            backend_queue_jobs=len(view.backend_queue),
            ahead_jobs=len(line),
            ahead_units=sum(u for u, _ in line),
            ahead_unit_hours=round(sum(u * r for u, r in line) / 3600, 2),
            runtime_ratio=round(self.ratios.ratio(tenant, store, snap.now), 3),
        )
        return replace(decision, projection=note)

    def _view(self, snap: PassSnapshot) -> dict[str, PartitionView]:
        hit = self._views.get(id(snap))
        return hit[1] if hit is not None and hit[0] is snap else self._latest

    def _runtime(self, spec: JobSpec, tenant: str, store: JobStore, now: datetime) -> float:
        return spec.runtime_estimate.total_seconds() * self.ratios.ratio(tenant, store, now)

