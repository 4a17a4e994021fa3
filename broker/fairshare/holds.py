"""Capacity held for a waiting job that is owed it, from one dispatch pass to the next. Pure.

With `hold_for_under_share`, a waiting job of a tenant within its quota or under its share
keeps the capacity it waits for from jobs behind it in the fair order: free units accumulate
until it fits (an 8-GPU job of a small tenant is not starved by a stream of 1-GPU jobs of a
flooding one). A pass that decides only new arrivals or a timer's job does not see the
holder, so the hold is remembered here, per partition, until the holder leaves the queue or
a later pass names another head; every other job's decision counts the held units as taken,
unless its tenant stands ahead of the holder's (a lower share ratio, and the holder is not
within its quota).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace

from broker.decision import Action, Decision
from broker.fairshare.order import Standing
from broker.model import job_named_for


@dataclass(frozen=True, slots=True)
class Hold:
    job_id: str
    tenant: str
    units: int
    in_quota: bool


class Holds:
    """The current hold of each partition (at most one: the head of its fair order)."""

    def __init__(self) -> None:
        self._by_partition: dict[str, Hold] = {}

    def __bool__(self) -> bool:
        return bool(self._by_partition)

    def put(self, partition: str, hold: Hold | None) -> None:
        """The partition's head waits (a hold) or none does (None) as of this pass."""
        if hold is None:
            self._by_partition.pop(partition, None)
        else:
            self._by_partition[partition] = hold

    def claim(self, partition: str, hold: Hold, place: Callable[[str], float]) -> None:
        """`hold` becomes the partition's, unless a job standing before its job in the fair order
        (`place`) holds it already: a later waiter of the pass would take the head's hold over."""
        held = self._by_partition.get(partition)
        if held is None or held.job_id == hold.job_id or place(hold.job_id) < place(held.job_id):
            self._by_partition[partition] = hold

    def at(self, partition: str) -> Callable[[Standing, int], None]:
        """Forget the partition's hold; the returned function sets the new one (job, its units)."""
        self._by_partition.pop(partition, None)

        def hold(standing: Standing, units: int) -> None:
            self._by_partition[partition] = Hold(standing.job_id, standing.tenant, units, standing.in_quota)

        return hold

    def drop_unless(self, queued: Collection[str] | None = None, *, gone: str | None = None) -> None:
        """Forget holds whose job left the queue (`gone`, or every job not in `queued`)."""
        for part, hold in list(self._by_partition.items()):
            if hold.job_id == gone or (queued is not None and hold.job_id not in queued):
                del self._by_partition[part]

    def named(
        self, decision: Decision, partition: str, job: tuple[str, str, int], ratios: Mapping[str, float],
        *, whole_pass: bool,
    ) -> Decision:
        """`decision` of `job` (id, tenant, units), waiting where the capacity reading has room for
        it while a hold on `partition` keeps that room for a job ahead: its reasons say so first (a
        projected wait alone reads as no room at all). The hold counts against it in a pass over
        the queue's head when another job holds (it claimed them before this job's turn); else
        as `blocking` says."""
        job_id, tenant, units = job
        offer = decision.offer
        hold = self._by_partition.get(partition)
        if hold is None or hold.job_id == job_id or decision.action != Action.WAIT or offer is None:
            return decision
        counts = whole_pass or partition in self.blocking(job_id, tenant, ratios)
        if (offer.free or 0) < units or not counts:
            return decision
        whose = job_named_for(hold.job_id, hold.tenant, tenant)
        why = (f"held: the {offer.free} free unit(s) at {offer.partition} are kept for {whose}, "
               f"ahead in the fair-share order and waiting for {hold.units}")
        return replace(decision, reasons=(why, *decision.reasons))

    def holders(self) -> set[str]:
        return {h.tenant for h in self._by_partition.values()}

    def blocking(self, job_id: str, tenant: str, ratios: Mapping[str, float]) -> dict[str, int]:
        """Units per partition this job must leave alone: held for a job ahead of it."""
        out: dict[str, int] = {}
        mine = ratios.get(tenant, 0.0)
        for part, h in self._by_partition.items():
            if h.job_id == job_id or h.tenant == tenant:
                continue
            if h.in_quota or mine >= ratios.get(h.tenant, 0.0):
                out[part] = h.units
        return out


def claimed_meanwhile(claimed: dict[str, int], held: Mapping[str, int]) -> AbstractContextManager[None]:
    """Count `held` units as claimed (a pass's `PassSnapshot.claimed`) while one job is decided.

    Most jobs have nothing held against them: a context that does nothing, not a generator's."""
    return _Claimed(claimed, held) if held else _NOTHING


class _Claimed:
    __slots__ = ("claimed", "held")

    def __init__(self, claimed: dict[str, int], held: Mapping[str, int]) -> None:
        self.claimed, self.held = claimed, held

    def __enter__(self) -> None:
        claimed = self.claimed
        for part, units in self.held.items():
            claimed[part] = claimed.get(part, 0) + units

    def __exit__(self, *exc: object) -> None:
        for part, units in self.held.items():
            self.claimed[part] -= units


_NOTHING: AbstractContextManager[None] = nullcontext()
