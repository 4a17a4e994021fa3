"""The shell around reclaim: one scheduler's waste budget and the borrowed work still stopping.

`FairQueue.reclaim_for` asks `Reclaimer.take` which borrowed attempts on a partition to preempt
for a job within its quota (`broker.fairshare.reclaim` chooses them, `broker.fairshare.budget`
paces them), and what the job's reasons say first: that they are preempted for it, or when they
will be, once the budget's bucket has refilled enough for the work they would lose. The units
of preempted work stay booked to the job they were preempted for until the dispatcher sees it
stopped (`stopped`; `broker.fairshare.stopping`), so no later pass preempts more for that need.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from broker.burst import is_onprem
from broker.burst.snapshot import PassSnapshot
from broker.clock import tick_at
from broker.decision import Action, Decision, ReclaimVictim
from broker.fairshare import onprem_partitions, partition_units, resolve_share
from broker.fairshare.book import FairShareBook, units_of
from broker.fairshare.budget import Bucket
from broker.fairshare.reclaim import Running, Victim, cheapest, victims
from broker.fairshare.stopping import Stopping, StoppingWork
from broker.model import JobSpec, Offer
from broker.policy import Policy
from broker.store import ReclaimBooking, ReclaimState

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Taken:
    """What reclaim does for one waiting job: the attempts to preempt, and why it says so."""

    victims: tuple[ReclaimVictim, ...] = ()
    reason: str | None = None
    """The job's first reason: the preemption, or the budget that delays it (None: neither)."""
    due_s: float | None = None
    """When the budget delays it: about when (epoch seconds) it will have refilled enough."""


class Reclaimer:
    """The waste budget's bucket per partition and preempted work still stopping."""

    def __init__(self, ticks: Callable[[], float] | None = None) -> None:
        self._ticks = ticks
        """The clock's monotonic ticks (`Clock.ticks`): the work still stopping is timed on them."""
        self._epoch: float | None = None
        """The tick of the Unix epoch, read once: where the ticks' timeline meets a kept booking's."""
        self._buckets: dict[str, Bucket] = {}
        """Per partition; a partition not yet charged has a full bucket."""
        self._kept: dict[str, tuple[float, float]] = {}
        """(level, at) per partition as a store kept them: sized by the policy when first used."""
        self._charges = 0
        """Counts the charges made (or levels restored)."""
        self._stopping = StoppingWork()
        """Preempted work still shutting down, booked to the job it was preempted for: another
        owner's job reclaims its own."""

    def stop_time(self, now: datetime) -> float:
        """`now` in seconds for the work still stopping: the wall clock read once, then the ticks.
        On the wall clock, a step forward (NTP, a resumed VM) dropped every booking as never seen
        stopped, and reclaim preempted more for the same need; a step back held them as long."""
        if self._ticks is None:  # (the simulator, and tests without a clock)
            return now.timestamp()
        ticks = self._ticks()
        if self._epoch is None:
            self._epoch = tick_at(EPOCH, now, ticks)
        return ticks - self._epoch

    @property
    def changes(self) -> int:
        """Counts the charges and bookings made (or restored): a saver compares it with its last."""
        return self._charges + self._stopping.version

    def stopped(self, attempt_id: str, now: datetime) -> None:
        """The dispatcher saw a preempted attempt stopped (its backend's status said so)."""
        self._stopping.stopped(attempt_id, self.stop_time(now))

    def release(self, for_job: str) -> None:
        """`for_job` runs, or left the queue: the units booked to it are no longer kept for it."""
        self._stopping.release(for_job)

    def booked_jobs(self) -> set[str]:
        """The jobs units are booked to (until they run or leave the queue)."""
        return self._stopping.for_jobs()

    def take(
        self,
        policy: Policy,
        book: FairShareBook,
        ratios: Mapping[str, float],
        owner: tuple[str, int],
        partition: str,
        free: int,
        now: datetime,
        *,
        for_job: str,
        commit: bool = True,
        not_holding: Collection[str] = (),
    ) -> Taken:
        """Borrowed attempts to preempt on `partition` so the owner's in-quota job `for_job` of
        `owner[1]` units gets its quota back (`commit` False: only say which; nothing is booked).
        `not_holding`: attempts pending in their backend's queue, which hold no unit."""
        rc = policy.document.fair_share.reclaim
        part = onprem_partitions(policy).get(partition)
        if not rc.enabled or part is None:
            return Taken()
        tenant, need = owner
        t, window, stop_t = now.timestamp(), rc.window.total_seconds(), self.stop_time(now)
        mine = self._booked(partition, for_job, stop_t)
        units = partition_units(part)
        capacity, rate = rc.max_capacity_share * units * window, rc.max_capacity_share * units
        bucket = self._bucket(partition, capacity, rate, t)
        running = [Running(aid, h.tenant, h.units, h.start, h.checkpoint_s)
                   for aid, h in book.live.items() if h.partition == partition and aid not in not_holding]
        tenants = {tenant, *(r.tenant for r in running)}  # the owner's quota bounds what it takes back
        quotas = {tn: resolve_share(policy, tn).quota.get(partition, 0) for tn in tenants}
        # Units stopping for another job are not free for this one: counting them, a second owner
        # waiting with the first preempted nothing, and reclaimed only once the first owner had
        # taken those units and their grace was over. This job's count until they are seen
        # stopped: a Slurm victim stops up to minutes after its grace, and meanwhile Slurm reads
        # them busy while the book no longer runs the victim, so a pass would preempt more.
        room = free - sum(s.beside for s in mine)  # read free and not yet counted on for this job
        free += sum(s.units for s in mine)
        chosen = victims(
            owner=tenant, need=need, free=free, running=running, quotas=quotas, ratios=ratios,
            waste_left=bucket.level_at(t), now=now,
        )
        if not chosen:
            # Nothing fits in what the bucket holds: the least costly set goes when the bucket is
            # full, whatever it loses (into debt), so the rate limit never keeps a quota for good.
            least = cheapest(owner=tenant, need=need, free=free, running=running, quotas=quotas, now=now)
            if not least:
                return Taken(reason=still_stopping(policy, partition, mine, stop_t) if mine else None)
            loss = sum(v.waste for v in least)
            if not bucket.allows(loss, t):
                wait = bucket.wait_s(loss, t, sum(v.growth for v in least))
                return Taken(reason=delayed(policy, partition, least, bucket, t, wait), due_s=t + wait)
            chosen = least
        if commit:
            self._buckets[partition] = bucket.charge(sum(v.waste for v in chosen), t)
            self._charges += 1
            short = need - sum(v.units for v in chosen) - sum(s.units + s.beside for s in mine)
            self._book_chosen(policy, book, partition, chosen, for_job, now, max(0, min(room, short)))
        chosen_ = tuple(ReclaimVictim(v.attempt_id, v.tenant, v.units, lost_unit_s=v.waste) for v in chosen)
        return Taken(chosen_, preempting(policy, partition, chosen))

    def _book_chosen(self, policy: Policy, book: FairShareBook, partition: str, chosen: Sequence[Victim],
                     for_job: str, now: datetime, beside: int) -> None:
        """Book the chosen victims' units to `for_job`, and with the first the `beside` free units the
        choice counts on: another job taking those while the victims stop would leave it short (and
        reclaim would preempt more)."""
        grace = policy.document.fair_share.reclaim.grace.total_seconds()
        for i, v in enumerate(chosen):
            self._stopping.add(partition, v.attempt_id, v.units, for_job, self.stop_time(now), grace,
                               beside=beside if i == 0 else 0)
            book.ended(v.attempt_id, now)

    def keep_off(self, decision: Decision, job: str, units: int, snap: PassSnapshot) -> Decision | None:
        """A RUN of `job` (`units`) on a partition where units are booked to another job (reclaimed
        for it, still stopping or just stopped, and the free units the reclaim counted on): it waits,
        saying why, unless the units free beside them fit it now. Sent to a batch queue, Slurm would
        start it on them ahead of that job, which waits in the broker until they read free. None:
        the decision stands."""
        offer = decision.offer
        if decision.action != Action.RUN or offer is None or offer.free is None:
            return None
        key = offer.partition
        booked = self._stopping.booked_elsewhere(key, job, self.stop_time(snap.now))
        if not booked:
            return None
        # The decision claimed the job's own units already; units seen stopped may read free, but
        # they are not the job's. A job this pass runs claimed the units booked to it (in
        # `others`): counting them again kept a second owner's job off the unit reclaimed for it.
        others = snap.claimed_by_others(key, units)
        mine = [s for s in booked if s.for_job not in snap.running_jobs]
        # A victim whose backend no longer runs it reads free before a status poll says it stopped:
        # another job took its units in that second, and the owner's job preempted more.
        held = sum(s.units for s in mine if s.stopped or s.attempt_id in snap.ended)
        held += sum(s.beside for s in mine)
        if offer.free - others - held >= units:
            return None
        snap.claimed[key] = others  # it waits: its own units are not claimed
        reclaimed = sum(s.units + s.beside for s in booked)
        why = (f"{reclaimed} unit(s) on {key} are being reclaimed for another job; "
               "it waits until that job has them")
        return reclaiming(decision, why)

    def book(self, policy: Policy, book: FairShareBook, victim: str, partition: str, units: int,
             for_job: str, now: datetime) -> None:
        """Book the units of `victim`, stopped for `for_job` with reclaim's grace, to that job (a
        swap, `burst.preempt_patient`: bounded by its own max_lost_share, not this budget)."""
        grace = policy.document.fair_share.reclaim.grace.total_seconds()
        self._stopping.add(partition, victim, units, for_job, self.stop_time(now), grace)
        book.ended(victim, now)

    def unseen_stops(self, now: datetime) -> list[Stopping]:
        """Bookings whose preempted attempt is not yet seen stopped (a restart reads them back
        unwatched), less those past their cap at `now` (reported and dropped)."""
        self._prune(self.stop_time(now))
        return [s for s in self._stopping.entries() if not s.stopped]

    def stopping_ids(self) -> set[str]:
        """The attempts preempted and still booked: not running work any more."""
        return {s.attempt_id for s in self._stopping.entries()}

    def booked_for(self, for_job: str, now: datetime) -> list[Stopping]:
        """The work still stopping whose units are `for_job`'s, on any partition."""
        self._prune(self.stop_time(now))
        return [s for s in self._stopping.entries() if s.for_job == for_job]

    def _booked(self, partition: str, for_job: str, t: float) -> list[Stopping]:
        """The work still stopping whose units are `for_job`'s; a victim never seen stopped
        within its cap is reported, and reclaim goes on without it."""
        self._prune(t)
        return self._stopping.booked(partition, for_job)

    def _prune(self, t: float) -> None:
        for s in self._stopping.prune(t):
            log.warning(
                "reclaim: attempt %s preempted on %s for job %s was not seen stopped %.0f s later; "
                "its %d unit(s) are no longer kept for that job", s.attempt_id, s.partition,
                s.for_job, t - s.since, s.units,
            )

    def _bucket(self, partition: str, capacity: float, rate: float, t: float) -> Bucket:
        """The partition's bucket under the policy now: charged here, else kept, else full."""
        old = self._buckets.get(partition)
        if old is None and partition in self._kept:
            old = Bucket(capacity, rate, *self._kept[partition])
        return Bucket.full(capacity, rate, t) if old is None else old.resized(capacity, rate)

    def restore(self, kept: ReclaimState) -> None:
        """Take back what a store kept: a restart or a new leader must not start with full
        buckets, which would let reclaim waste a budget at once, nor forget the units of work
        still stopping that are booked to an owner's job, which would preempt more for it and
        let other work take them first."""
        self._kept = {p: lv for p, lv in kept.levels.items() if p not in self._buckets}
        self._charges += 1
        for b in kept.bookings:
            self._stopping.put(
                Stopping(
                    b.attempt_id, b.partition, b.units, b.for_job, b.since_s, b.until_s, b.stopped, b.beside
                )
            )

    def mirror(self, kept: ReclaimState) -> None:
        """An API replica's copy of what the scheduler saved: those bookings and no other (one
        the scheduler released or saw stopped since is not kept as it was)."""
        self._stopping = StoppingWork()
        self.restore(kept)

    def state(self) -> ReclaimState:
        """What a store keeps: (level, at) per partition charged, or kept and not used since, and
        the bookings held."""
        levels = {**self._kept, **{p: (b.level, b.at) for p, b in self._buckets.items()}}
        bookings = tuple(
            ReclaimBooking(
                s.attempt_id, s.partition, s.units, s.for_job, s.since, s.until, s.stopped, s.beside
            )
            for s in self._stopping.entries()
        )
        return ReclaimState(levels, bookings)


def preempting(policy: Policy, partition: str, chosen: Sequence[Victim]) -> str:
    """What a waiting job's reasons say first when borrowed work is preempted for it."""
    units = sum(v.units for v in chosen)
    grace = policy.document.fair_share.reclaim.grace.total_seconds()
    # (other tenants' work, always: their names are not the owner's to learn)
    return (
        f"reclaiming {units} borrowed unit(s) on {partition} for its quota: preempting {len(chosen)} "
        f"job(s) of other tenants ({grace:.0f} s grace); it starts when they stop"
    )


def still_stopping(policy: Policy, partition: str, mine: Sequence[Stopping], t: float) -> str:
    """What a waiting job's reasons say first while the work preempted for it is still stopping."""
    grace = policy.document.fair_share.reclaim.grace.total_seconds()
    return (
        f"reclaimed {sum(s.units for s in mine)} borrowed unit(s) on {partition} for its quota: "
        f"{len(mine)} preempted job(s) still stopping ({t - min(s.since for s in mine):.0f} s since "
        f"the preemption, {grace:.0f} s grace); it starts when they stop"
    )


def delayed(
    policy: Policy, partition: str, least: Sequence[Victim], bucket: Bucket, t: float, wait_s: float
) -> str:
    """Why borrowed work holding the job's quota is not preempted yet, and about when it will be
    (in `wait_s`, `Bucket.wait_s`)."""
    rc = policy.document.fair_share.reclaim
    loss = sum(v.waste for v in least)
    wait_min = max(1, round(wait_s / 60))
    unit = "accelerator" if onprem_partitions(policy)[partition].accelerator else "core"
    return (
        f"its quota on {partition} is lent to borrowed work of other tenants, reclaimed in about "
        f"{wait_min} min, when the reclaim budget has refilled: preempting it now would lose "
        f"{loss:,.0f} {unit}-seconds of work, and the budget holds {bucket.level_at(t):,.0f} "
        f"(it refills at {rc.max_capacity_share:.0%} of the partition, up to {span(rc.window)} "
        f"of that, fair_share.reclaim)"
    )


def span(d: timedelta) -> str:
    """A window as the policy likely wrote it: seconds under a minute, else minutes."""
    s = d.total_seconds()
    return f"{s:g} s" if s < 60 else f"{s / 60:g} min"


def bound_for_queue(decision: Decision, spec: JobSpec, others: int = 0) -> bool:
    """The decision runs the job where no units are free for it now: on-prem, that sends it to
    its backend's own queue (Slurm; the local executor runs nothing without room). `others`:
    units other jobs claimed there since the capacity was read (a pass reuses its snapshot for a
    poll interval): a job decided beside a borrowed one just placed finds them taken too."""
    offer = decision.offer
    return (
        decision.action == Action.RUN
        and offer is not None
        and offer.free is not None
        and offer.free - others < units_of(spec)
    )


def bound_in_pass(decision: Decision, spec: JobSpec, snap: PassSnapshot) -> bool:
    """`bound_for_queue` for a decision of the pass: it claimed the job's own units already."""
    offer = decision.offer
    if offer is None:
        return False
    return bound_for_queue(decision, spec, snap.claimed_by_others(offer.partition, units_of(spec)))


def reclaiming(decision: Decision, reason: str) -> Decision:
    """The decision of a job that reclaims its quota: it waits in the broker, saying so first. A
    job bound for Slurm's queue waits here instead: there it would wait out the borrowed work it
    reclaims (and Slurm's queue says nothing of the quota), so it is sent once its units are free."""
    reasons = decision.reasons
    if decision.action == Action.RUN:  # (burst.decision's reason for it no longer holds)
        reasons = tuple(r for r in reasons if not r.endswith("; sent to its queue"))
    return replace(decision, action=Action.WAIT, reasons=(reason, *reasons))


def quota_offer(policy: Policy, tenant: str, decision: Decision) -> Offer | None:
    """The on-prem offer whose partition reclaim takes back for a waiting job: the decision's own
    when the tenant has quota there, else the best allowed on-prem one where it has.

    A job that may also run on a cheaper partition nobody is guaranteed waits for that one; with
    it full of borrowed work too, the quota's partition must still be taken back, or the owner
    waits behind borrowed work for as long as that runs."""
    offer, quota = decision.offer, resolve_share(policy, tenant).quota
    if offer is None or quota.get(offer.partition, 0) > 0 or decision.explanation is None:
        return offer
    for scored in decision.explanation.allowed:
        other = scored.offer
        if other.free is not None and quota.get(other.partition, 0) > 0 and is_onprem(policy, other.site):
            return other
    return offer


def run_on_quota(
    policy: Policy, tenant: str, spec: JobSpec, decision: Decision, snap: PassSnapshot
) -> Decision:
    """A job within its quota that would wait for another on-prem partition (a cheaper one nobody
    is guaranteed) runs now on its quota's partition when that has room for it: its guarantee is
    not to wait behind borrowed work, and there reclaim frees the room (`quota_offer`)."""
    waits_for = decision.offer
    if decision.action != Action.WAIT or waits_for is None or spec.resources.nodes > 1:
        return decision
    offer = quota_offer(policy, tenant, decision)
    if offer is None or offer.partition == waits_for.partition or not is_onprem(policy, waits_for.site):
        return decision
    if offer.free is None or offer.free - snap.claimed.get(offer.partition, 0) < units_of(spec):
        return decision
    snap.claim(offer, spec)
    why = (f"runs on {offer.partition}, within its tenant's quota there, rather than waiting for "
           f"{waits_for.partition}")
    return replace(decision, action=Action.RUN, offer=offer, reasons=(why,))
