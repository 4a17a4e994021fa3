"""A simulated job's static placement facts: the offers placement allows it, each priced for its
runtime (spot at its expected billed hours), as the references and the baselines read them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import compress

import numpy as np

from broker.burst.decision import onprem_sites
from broker.burst.snapshot import partition_key
from broker.burst.spot import offer_outlook, spot_refusal
from broker.model import (
    JobSpec,
    Offer,
)
from broker.placement import PlacementContext, ScoredOffer, place, prepare_offers
from broker.placement.rank import rank
from broker.policy import Policy
from broker.policy.offers import static_offers
from broker.sim.jobs import EPOCH, SimJob, shape_of


@dataclass(frozen=True, slots=True)
class JobFacts:
    """What static placement (no capacity, no blocks) says about one job."""

    allowed: tuple[Offer, ...]
    """Allowed offers (spot ones over the restart limit left out), in placement's unranked order."""
    onprem: dict[str, float]
    """Partition key -> cost of the cheapest allowed on-prem offer there (price x runtime)."""
    cloud_cost: float | None
    """Expected cost of the cheapest allowed cloud offer (spot: with the billed hours its
    interruptions are expected to take, `broker.burst.spot`), None if there is none."""
    cost: dict[str, float]
    """Offer key -> expected cost of each allowed offer (the same pricing)."""
    by_cost: tuple[Offer, ...] = ()
    """`allowed` by expected cost, then site, then offer key."""
    onprem_ranked: tuple[Offer, ...] = ()
    """The allowed on-prem offers best-first by the policy's rank chain (placement's order)."""
    cloud_by_cost: tuple[Offer, ...] = ()
    """`by_cost` without the on-prem offers (what the baselines burst to, cheapest first)."""
    cloud_floor: float | None = None
    """The least an allowed cloud run of the job can be billed: the cheapest allowed cloud offer
    with spot never interrupted, which a lucky spot run costs (None: `cloud_cost`, no spot)."""
    over_limit_spot: tuple[Offer, ...] = ()
    """The cloud spot offers placement allows that the restart limit left out for the job's
    runtime (a strategy deciding on a shorter estimate may still take them)."""


def job_facts(
    job: SimJob,
    policy: Policy,
    offers: Sequence[Offer],
    keys: dict[int, tuple[str, float, str | None]] | None = None,
) -> JobFacts:
    """Run `place()` once on the static offers and keep what the baselines and the bound need.

    The plain path (one full placement per job); `all_facts` gives the same facts faster.
    `keys` caches per offer object (id): its key, price per hour in the policy currency, and
    its partition key when on-prem (shared across jobs)."""
    expl = place(job.spec, job.tenant, offers, policy, PlacementContext(now=job.created_at))
    home = onprem_sites(policy)
    onprem = [s for s in expl.unranked if s.offer.site in home]
    return _priced(job, policy, _rows([s.offer for s in expl.unranked], policy, keys), onprem)


_Row = tuple[Offer, str, float, "str | None"]
"""An allowed offer, its key, its price per hour (policy currency), its partition if on-prem."""


def _rows(
    allowed: Sequence[Offer], policy: Policy, keys: dict[int, tuple[str, float, str | None]] | None
) -> list[_Row]:
    keys = {} if keys is None else keys
    out = []
    for o in allowed:
        known = keys.get(id(o))
        if known is None:
            known = keys[id(o)] = _offer_facts(o, policy)
        out.append((o, *known))
    return out


def _priced(
    job: SimJob, policy: Policy, rows: Sequence[_Row], onprem_scored: Sequence[ScoredOffer]
) -> JobFacts:
    """Price the allowed offers for the job (spot at its expected billed hours) into its facts."""
    runtime_h = job.runtime_s / 3600
    nodes = job.spec.resources.nodes
    onprem: dict[str, float] = {}
    cloud: float | None = None
    floor: float | None = None
    costs: dict[str, float] = {}
    kept: list[Offer] = []
    order: list[tuple[float, str, str, int]] = []
    spot_h: dict[str, float | None] = {}  # site -> expected billed hours on spot (None: refused)
    dropped: list[Offer] = []
    for o, key, hourly, part in rows:
        hours = runtime_h
        if o.spot:
            if o.site not in spot_h:
                ok = spot_refusal(job.spec, o, policy, slack_h=None) is None
                spot_h[o.site] = offer_outlook(job.spec, o, policy, runtime_h).billed_h if ok else None
            got = spot_h[o.site]
            if got is None:
                if part is None:
                    dropped.append(o)
                continue
            hours = got
        cost = hourly * hours * nodes  # = estimate_cost(job.spec, o, policy, hours)
        costs[key] = cost
        order.append((cost, o.site, key, len(kept)))  # the index: stable among equal keys
        kept.append(o)
        if part is not None:
            onprem[part] = min(cost, onprem.get(part, cost))
        else:
            cloud = cost if cloud is None else min(cloud, cost)
            uninterrupted = hourly * runtime_h * nodes
            floor = uninterrupted if floor is None else min(floor, uninterrupted)
    order.sort()
    ranked = _kept(_rank_onprem(policy, onprem_scored), kept, len(kept) < len(rows))
    by_cost = tuple(kept[c[3]] for c in order)
    clouds = tuple(o for o in by_cost if o.site not in onprem_sites(policy))
    return JobFacts(tuple(kept), onprem, cloud, costs, by_cost, ranked, clouds, floor, tuple(dropped))


def _rank_onprem(policy: Policy, onprem_scored: Sequence[ScoredOffer]) -> tuple[Offer, ...]:
    """The allowed on-prem offers by the policy's rank chain."""
    return tuple(s.offer for s in rank(list(onprem_scored), policy.objective.rank)) if onprem_scored else ()


def _kept(ranked: tuple[Offer, ...], kept: Sequence[Offer], dropped: bool) -> tuple[Offer, ...]:
    """`ranked` without the offers the spot check dropped (if any were)."""
    if not dropped:
        return ranked
    held = {id(o) for o in kept}
    return tuple(o for o in ranked if id(o) in held)


class _Priced:
    """One shape's allowed offers as arrays, priced for each job of the shape at once: the same
    floats (price x hours x nodes, in that order) and the same orders as `_priced`."""

    def __init__(self, rows: Sequence[_Row]) -> None:
        self.hourly = np.array([r[2] for r in rows], dtype=np.float64)
        self.home = [(i, r[3]) for i, r in enumerate(rows) if r[3] is not None]
        self.cloud_rows = [i for i, r in enumerate(rows) if r[3] is None]
        self.cloud = np.array(self.cloud_rows, dtype=np.int64)
        sites = [r[0].site for r in rows]
        self.site_rank = np.unique(np.array(sites, dtype=object), return_inverse=True)[1]
        self.key_rank = np.unique(np.array([r[1] for r in rows], dtype=object), return_inverse=True)[1]
        self.offer_list = tuple(r[0] for r in rows)
        self.key_list = [r[1] for r in rows]
        self.cloud_list = [r[3] is None for r in rows]
        self.spot: dict[str, tuple[Offer, list[int]]] = {}  # site -> (its first spot offer, rows)
        for i, r in enumerate(rows):
            if r[0].spot:
                self.spot.setdefault(r[0].site, (r[0], []))[1].append(i)

    def facts_of(
        self, jobs: Sequence[SimJob], policy: Policy, ranked: Sequence[tuple[Offer, ...]]
    ) -> list[JobFacts]:
        """The facts of jobs of this shape (`ranked[n]`: job n's on-prem offers in rank order),
        priced as one table: row n is `hourly * hours * nodes` for job n, elementwise as alone."""
        runtime_h = [job.runtime_s / 3600 for job in jobs]
        hours = np.repeat(np.array(runtime_h, dtype=np.float64)[:, None], len(self.hourly), axis=1)
        keep = np.ones(hours.shape, dtype=bool)
        for n, job in enumerate(jobs):
            for o, idx in self.spot.values():
                if spot_refusal(job.spec, o, policy, slack_h=None) is None:
                    hours[n, idx] = offer_outlook(job.spec, o, policy, runtime_h[n]).billed_h
                else:
                    keep[n, idx] = False
        nodes = np.array([job.spec.resources.nodes for job in jobs], dtype=np.float64)
        cost = self.hourly * hours * nodes[:, None]
        # Per row: the kept offers by (cost, site, key, index), then the dropped ones (cut off).
        width = (len(jobs), len(self.hourly))
        index = np.broadcast_to(np.arange(width[1]), width)
        ranks = (np.broadcast_to(self.key_rank, width), np.broadcast_to(self.site_rank, width))
        order = np.lexsort((index, *ranks, cost, (~keep).astype(np.int8)))
        in_cloud = keep[:, self.cloud]
        cheapest = np.where(in_cloud, cost[:, self.cloud], np.inf).min(axis=1, initial=np.inf).tolist()
        plain = self.hourly * np.array(runtime_h, dtype=np.float64)[:, None] * nodes[:, None]
        floor = np.where(in_cloud, plain[:, self.cloud], np.inf).min(axis=1, initial=np.inf).tolist()
        clouds = in_cloud.sum(axis=1).tolist()
        rows = zip(cost.tolist(), keep.tolist(), keep.sum(axis=1).tolist(), order.tolist(), strict=True)
        return [
            self._row(values, kept, n_kept, by, (cheapest[n], floor[n]) if clouds[n] else None, ranked[n])
            for n, (values, kept, n_kept, by) in enumerate(rows)
        ]

    def _row(
        self,
        values: list[float],
        kept: list[bool],
        n_kept: int,
        order: list[int],
        cloud: tuple[float, float] | None,
        ranked: tuple[Offer, ...],
    ) -> JobFacts:
        """One job's facts from its row of the table (`cloud`: its cheapest cloud cost and floor)."""
        onprem: dict[str, float] = {}
        for i, part in self.home:
            if kept[i]:
                onprem[part] = min(values[i], onprem.get(part, values[i]))
        offers, keys = self.offer_list, self.key_list
        if n_kept == len(kept):
            allowed, costs = offers, dict(zip(keys, values, strict=True))
        else:
            allowed = tuple(o for o, k in zip(offers, kept, strict=True) if k)
            costs = {key: v for key, v, k in zip(keys, values, kept, strict=True) if k}
        by = order[:n_kept]
        by_cost = tuple(map(offers.__getitem__, by))
        clouds = tuple(compress(by_cost, map(self.cloud_list.__getitem__, by)))
        ranked = _kept(ranked, allowed, n_kept < len(kept))
        cheapest, floor = (None, None) if cloud is None else cloud
        dropped = () if n_kept == len(kept) else tuple(offers[i] for i in self.cloud_rows if not kept[i])
        return JobFacts(allowed, onprem, cheapest, costs, by_cost, ranked, clouds, floor, dropped)


def _offer_facts(o: Offer, policy: Policy) -> tuple[str, float, str | None]:
    hourly = o.price_per_hour * (policy.rate(o.currency or policy.currency) or 0.0)
    return o.key, hourly, partition_key(o) if o.site in onprem_sites(policy) else None


def all_facts(jobs: Sequence[SimJob], policy: Policy) -> list[JobFacts]:
    """Every job's facts: the allowed set from one placement per job shape (a one-hour stand-in,
    placement's memo answers the rest), on-prem scores at the job's own runtime from a
    placement over the on-prem offers alone. Same facts as `job_facts` (tests pin it)."""
    offers = prepare_offers(static_offers(policy, read_at=EPOCH), policy)
    keys = {id(o): _offer_facts(o, policy) for o in offers}  # the facts share these offer objects
    home = onprem_sites(policy)
    local = prepare_offers([o for o in offers if o.site in home], policy)
    shapes: dict[tuple[str, int], tuple[JobSpec, _Priced]] = {}  # (tenant, id of the shape)
    priced: dict[tuple[int, ...], _Priced] = {}  # the same allowed offers (ids): the same arrays
    onprem: dict[tuple[str, int, float], tuple[Offer, ...]] = {}  # (tenant, shape, runtime)
    out: list[JobFacts | None] = []
    tables: dict[_Priced, list[int]] = {}  # each table's jobs (their indices)
    ranks: list[tuple[Offer, ...]] = []
    for j in jobs:
        shape = shape_of(j, policy)
        if shape is None:
            out.append(job_facts(j, policy, offers, keys))
            ranks.append(())
            continue
        ctx = PlacementContext(now=j.created_at)
        hit = shapes.get((j.tenant, id(shape)))
        if hit is None or hit[0] is not shape:
            allowed = [s.offer for s in place(shape, j.tenant, offers, policy, ctx).unranked]
            ids = tuple(id(o) for o in allowed)  # the offers live as long as `offers`
            if ids not in priced:
                priced[ids] = _Priced(_rows(allowed, policy, keys))
            hit = shapes[(j.tenant, id(shape))] = (shape, priced[ids])
        # On-prem scores read the runtime (and the shape), not the name: one ranking per runtime.
        at = (j.tenant, id(shape), j.runtime_s)
        ranked = onprem.get(at)
        if ranked is None:
            scored = place(j.spec, j.tenant, local, policy, ctx).unranked if local else ()
            ranked = onprem[at] = _rank_onprem(policy, scored)
        tables.setdefault(hit[1], []).append(len(out))
        out.append(None)
        ranks.append(ranked)
    for table, at_n in tables.items():  # each table prices all its jobs at once
        got = table.facts_of([jobs[n] for n in at_n], policy, [ranks[n] for n in at_n])
        for n, f in zip(at_n, got, strict=True):
            out[n] = f
    return [f for f in out if f is not None]
