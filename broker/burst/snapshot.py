"""One dispatch pass's view of the world: offers with live capacity, routes, money.

Within a pass, every job started or queued on-prem is subtracted from what the next job
sees (free capacity goes down, the expected wait goes up), so one pass never over-commits a
partition and the wait estimate includes the broker's own backlog.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from broker.burst.decision import demand
from broker.burst.money import TenantMoney
from broker.burst.routes import RouteState
from broker.model import JobSpec, Offer, SiteId


def partition_key(offer: Offer) -> str:
    """Offers of different sizes from one partition share their capacity."""
    return offer.partition


@dataclass
class PassSnapshot:
    now: datetime
    offers: Sequence[Offer]
    capacity_total: Mapping[str, int] = field(default_factory=dict)
    """Accelerators (or cores) per on-prem partition key, for turning backlog into wait."""
    routes: dict[SiteId, RouteState] = field(default_factory=dict)
    blocked: frozenset[str] = frozenset()
    block_reasons: Mapping[str, str] = field(default_factory=dict)
    """Why each blocked key is blocked (`PlacementContext.block_reasons`)."""
    unhealthy: Mapping[SiteId, str] = field(default_factory=dict)
    drained: Mapping[SiteId, str] = field(default_factory=dict)
    """Sites an operator drained, with who and why: no new placements there."""
    no_images: Mapping[SiteId, str] = field(default_factory=dict)
    """Sites whose backend cannot run a container image, with why."""
    capacity: Mapping[str, tuple[int, float]] = field(default_factory=dict)
    """Partition key -> (free units, expected wait seconds) now, when the offers are a static
    catalog (the simulator); empty when the on-prem offers carry their live values."""
    money: dict[str, TenantMoney] = field(default_factory=dict)
    started: frozenset[str] = frozenset()
    """Attempts pending in the store that their backend already runs (a poll has yet to say):
    they hold their units."""
    ended: frozenset[str] = frozenset()
    """Attempts live in the store that their backend no longer runs (a poll has yet to say):
    their units read free (`broker.dispatch.offers.ended_attempts`)."""
    claimed: dict[str, int] = field(default_factory=dict)
    claim_shapes: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    """Partition key -> (units per node, nodes) of each job this pass started there: where on the
    nodes its units went matters to a later job over several nodes (`BurstInputs.nodes_fit`)."""
    running_jobs: set[str] = field(default_factory=set)
    """Jobs this pass decided to run on-prem: units booked to them by reclaim are in `claimed` now."""
    backlog_h: dict[str, float] = field(default_factory=dict)

    def adjustments(self) -> dict[str, tuple[int, float]]:
        """Partition key -> (accelerators claimed, extra wait seconds) from this pass so far.

        The decision applies these to the on-prem offers itself, so the offer list handed to
        placement stays the same object for the whole pass (placement caches per snapshot).
        """
        out: dict[str, tuple[int, float]] = {}
        for key in {*self.claimed, *self.backlog_h}:
            total = self.capacity_total.get(key)
            backlog = self.backlog_h.get(key, 0.0)
            extra = backlog / total * 3600 if backlog and total else 0.0
            out[key] = (self.claimed.get(key, 0), extra)
        return out

    def view(self) -> list[Offer]:
        """Offers as the next job should see them after this pass's claims and backlog."""
        if not self.claimed and not self.backlog_h:
            return list(self.offers)
        out = []
        for offer in self.offers:
            key = partition_key(offer)
            used = self.claimed.get(key, 0)
            backlog = self.backlog_h.get(key, 0.0)
            if not used and not backlog:
                out.append(offer)
                continue
            update: dict[str, object] = {}
            if used and offer.free is not None:
                update["free"] = max(0, offer.free - used)
            total = self.capacity_total.get(key)
            if backlog and total:
                update["expected_wait_s"] = offer.expected_wait_s + backlog / total * 3600
            out.append(offer.model_copy(update=update))
        return out

    def claim(self, offer: Offer, spec: JobSpec) -> None:
        """A job starts here now: its accelerators are taken, and it is ahead of later jobs."""
        key = partition_key(offer)
        self.claimed[key] = self.claimed.get(key, 0) + demand(spec)
        nodes = spec.resources.nodes
        self.claim_shapes.setdefault(key, []).append((demand(spec) // nodes, nodes))
        self.enqueue(offer, spec)

    def claimed_by_others(self, partition: str, units: int) -> int:
        """Units claimed on `partition` in this pass by jobs other than one whose decision
        claimed its own `units` there (`claim`): what is not free for that job."""
        return max(0, self.claimed.get(partition, 0) - units)

    def enqueue(self, offer: Offer, spec: JobSpec) -> None:
        """A job waits for this partition: it is ahead of every later job in the pass."""
        key = partition_key(offer)
        hours = spec.runtime_estimate.total_seconds() / 3600
        self.backlog_h[key] = self.backlog_h.get(key, 0.0) + demand(spec) * hours

    def launch(self, tenant: str, offer: Offer) -> None:
        """A burst starts at a cloud: its route has one more instance provisioning (per-route
        limits hold within the pass), and the money it draws on is read again for the next jobs."""
        site = SiteId(offer.site)
        state = self.routes.get(site, RouteState())
        self.routes[site] = replace(state, provisioning=state.provisioning + 1)
        self._forget_money(tenant)

    def unlaunch(self, tenant: str, offer: Offer) -> None:
        """A burst `launch` recorded that will not start after all (the job waits on-prem
        instead): its route slot is free again for the pass's next jobs."""
        site = SiteId(offer.site)
        state = self.routes.get(site, RouteState())
        self.routes[site] = replace(state, provisioning=max(0, state.provisioning - 1))
        self._forget_money(tenant)

    def _forget_money(self, tenant: str) -> None:
        """Drop the cached money a burst changed: the tenant's, and every tenant's when a global
        cap is set, since each tenant's `global_left` counts this burst too (a stale one would
        send another tenant's job to a burst the store then refuses)."""
        cached = self.money.pop(tenant, None)
        if cached is None or cached.global_left is not None:
            self.money.clear()
