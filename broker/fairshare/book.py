"""The fair-share book: which tenant holds what on-prem now, and its decayed past use.

State, but no I/O: the planner tells it when on-prem work starts and ends (and, after a
restart, which attempts are live); every method takes the time from its caller.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from broker.burst.projection import NEVER_S, expected_end, projected_wait_s
from broker.fairshare.holds import Holds
from broker.fairshare.order import Queued, TenantState, dominant, share_ratios
from broker.fairshare.shares import onprem_partitions, resolve_share
from broker.fairshare.usage import ZERO, Demand, Interval, UsageLedger, usage
from broker.model import JobSpec
from broker.policy import Policy


def demand_of(spec: JobSpec) -> Demand:
    r = spec.resources
    return Demand(float(r.accelerators.count), float(r.cpus), float(r.memory_gb)).scaled(r.nodes)


def units_of(spec: JobSpec) -> int:
    """Quota units a job takes: accelerators, or whole cores when it needs none."""
    return (spec.accelerator_count or math.ceil(spec.resources.cpus)) * spec.resources.nodes


@dataclass(frozen=True, slots=True)
class Holding:
    """One live on-prem attempt as the book counts it."""

    tenant: str
    partition: str
    demand: Demand
    units: int
    start: datetime
    end: datetime | None = None
    """When it is expected to end (its start plus the job's runtime estimate), if known."""
    checkpoint_s: float | None = None
    """The job's checkpoint interval: reclaim counts at most that much of its work as lost."""
    max_wait_s: float = 0.0
    """The job's effective max_wait: `burst.preempt_patient` stops only patient work (0: never)."""
    restarts: int = 0
    """Runs the job had before this one."""
    gang: bool = False
    """A gang of several nodes: never stopped for a swap."""
    due: datetime | None = None
    """The job's start deadline (arrival + max_wait): `burst.preempt_patient`'s `min_slack`."""
    queued: bool = False
    """Sent to its backend's queue (Slurm's) and not seen running: it uses nothing yet, so its
    tenant's usage and units in use leave it out, but its units count against the quota."""


def capacity_of(policy: Policy) -> Demand:
    """Total on-prem accelerators, cores and memory (the denominators of every share)."""
    total = ZERO
    for part in onprem_partitions(policy).values():
        total = total + Demand(
            float(part.count_per_node * part.nodes if part.accelerator else 0),
            part.cpus_per_node * part.nodes,
            part.memory_gb_per_node * part.nodes,
        )
    return total


CLOSED_KEPT = 50_000
"""Ended attempts the book remembers, so a stale list of live attempts never reopens one."""


class FairShareBook:
    """Live on-prem holdings by attempt id, plus the decayed ledger of finished ones."""

    def __init__(self, half_life_s: float) -> None:
        self.ledger = UsageLedger(half_life_s)
        self.live: dict[str, Holding] = {}
        self._closed: dict[str, None] = {}
        """Attempts whose holding ended (oldest first, the newest `CLOSED_KEPT`): a list of live
        attempts read before the end (a pass's, across an await) must not open them again."""

    def set_half_life(self, half_life_s: float) -> None:
        """A new policy with another half-life keeps each tenant's past use, fading by the new one."""
        if half_life_s != self.ledger.half_life_s:
            self.ledger = self.ledger.with_half_life(half_life_s)

    def started(self, attempt_id: str, holding: Holding) -> None:
        self._closed.pop(attempt_id, None)  # (the simulator runs a requeued job's id again)
        self.live.setdefault(attempt_id, holding)

    def adopt(self, attempt_id: str, holding: Holding) -> None:
        """An attempt a list of live ones names and the book lacks: held, unless it ended here."""
        if attempt_id not in self._closed:
            self.live.setdefault(attempt_id, holding)

    def running(self, attempt_id: str, at: datetime) -> None:
        """A queued attempt was seen running at `at`: its usage counts from then, not from when it
        was sent to the backend's queue (its expected end moves with it)."""
        held = self.live.get(attempt_id)
        if held is not None and held.queued:
            end = at + (held.end - held.start) if held.end is not None else None
            self.live[attempt_id] = replace(held, queued=False, start=at, end=end)

    def ended(self, attempt_id: str, end: datetime) -> None:
        held = self.live.pop(attempt_id, None)
        self._closed[attempt_id] = None
        if len(self._closed) > CLOSED_KEPT:
            del self._closed[next(iter(self._closed))]
        if held is not None and not held.queued:  # (one that never ran used nothing)
            self.ledger.add(Interval(held.tenant, held.demand, held.start, max(end, held.start)))

    def sync(self, live_ids: Iterable[str], now: datetime) -> None:
        """Close holdings whose attempt is no longer live (ended while nobody told the book)."""
        keep = set(live_ids)
        for attempt_id in [a for a in self.live if a not in keep]:
            self.ended(attempt_id, now)

    def tenant_states(
        self, policy: Policy, now: datetime, tenants: Iterable[str] = ()
    ) -> dict[str, TenantState]:
        """Every tenant that holds, held or asks for on-prem capacity, with its share and usage."""
        allocated: dict[str, Demand] = {}
        in_use: dict[str, dict[str, int]] = {}
        queued: dict[str, Queued] = {}
        running = []
        for h in self.live.values():
            if h.queued:
                queued[h.tenant] = queued.get(h.tenant, Queued()).plus(h.partition, h.units, h.demand)
                continue
            allocated[h.tenant] = allocated.get(h.tenant, ZERO) + h.demand
            per = in_use.setdefault(h.tenant, {})
            per[h.partition] = per.get(h.partition, 0) + h.units
            running.append(Interval(h.tenant, h.demand, h.start))
        history = self.ledger.history(now, running)
        used = usage(allocated, history, self.ledger.half_life_s)
        names = {*used, *queued, *tenants, *(t.id for t in policy.tenants)}
        return {
            t: TenantState(share=resolve_share(policy, t), usage=used.get(t, ZERO), in_use=in_use.get(t, {}),
                           queued=queued.get(t, Queued()))
            for t in names
        }

    def quota_waits(self, policy: Policy, tenant: str, need: int, now: datetime) -> dict[str, float]:
        """Seconds until the tenant's own quota on each on-prem partition has `need` units free, as
        its running work there ends (NEVER_S where its quota is smaller than `need`)."""
        quota, now_s = resolve_share(policy, tenant).quota, now.timestamp()
        out: dict[str, float] = {}
        for key in onprem_partitions(policy):
            mine = [h for h in self.live.values() if h.tenant == tenant and h.partition == key]
            ends = [(expected_end((h.end or now).timestamp(), now_s), h.units) for h in mine]
            free = max(0, quota.get(key, 0) - sum(u for _, u in ends))
            wait = projected_wait_s(free, ends, (), need, now_s, total=quota.get(key, 0))
            out[key] = min(NEVER_S, max(0.0, wait))  # inf (never) too
        return out

    def held_for(
        self, holds: Holds, policy: Policy, now: datetime, job_id: str, tenant: str
    ) -> dict[str, int]:
        """Units per partition a job must leave to waiting jobs ahead of it (see `Holds`)."""
        if not holds:
            return {}
        capacity = capacity_of(policy)
        states = self.tenant_states(policy, now, {tenant, *holds.holders()})
        active = {t for t, st in states.items() if dominant(st.usage, capacity) > 0}
        ratios = share_ratios(states, active | {tenant, *holds.holders()}, capacity)
        return holds.blocking(job_id, tenant, ratios)


def running_partition(policy: Policy, site: str, instance_type: str) -> str | None:
    """The quota key of an on-prem offer, or None for a cloud offer."""
    key = f"{site}/{instance_type}"
    return key if key in onprem_partitions(policy) else None
