"""The filters in the order `place()` applies them, and the decision's path through them.

A decision needs only what passes every filter; the reasons for the rest are built when an
explanation is read (`broker.placement.core`). So each filter may have a keep-only twin,
built once per decision: None when it keeps everything for this job, else a function giving
exactly the filter's `kept` part without building reasons (per-site and per-hardware rule
verdicts, one list comprehension per group). A filter without a twin runs as is, its
reasons dropped. tests/placement/test_keep.py checks every twin against its filter.
"""

from __future__ import annotations

from collections.abc import Callable

from broker.model import Offer
from broker.placement._env import Env, Group
from broker.placement._filter import GroupFilter, GroupKeep, Kept, OfferFilter, OfferKeep, per_group
from broker.placement.blocklist import (
    filter_blocked_offers,
    filter_blocked_sites,
    keep_unblocked_offers,
    keep_unblocked_sites,
)
from broker.placement.bursting import filter_bursting, keep_bursting
from broker.placement.export import filter_export, keep_export
from broker.placement.gang import filter_gang, keep_gang
from broker.placement.hardware import (
    filter_hardware_model,
    filter_hardware_size,
    keep_hardware_model,
    keep_hardware_size,
)
from broker.placement.health import filter_health, keep_healthy
from broker.placement.images import filter_images, keep_images
from broker.placement.price_cap import filter_price_cap, keep_price_cap
from broker.placement.residency import filter_residency, keep_residency
from broker.placement.rules import filter_offer_rules, filter_rules, keep_offer_rules, keep_rules
from broker.placement.spot import filter_spot, keep_spot
from broker.placement.tenant import filter_tenant_sites, keep_tenant_sites

GROUP_FILTERS: tuple[GroupFilter, ...] = (
    filter_health,
    filter_blocked_sites,
    filter_tenant_sites,
    filter_bursting,
    filter_images,
    filter_hardware_model,
    filter_residency,
    filter_export,
    filter_rules,
)
OFFER_FILTERS: tuple[OfferFilter, ...] = (
    filter_hardware_size,
    filter_spot,
    filter_gang,
    filter_price_cap,
    filter_blocked_offers,
    filter_offer_rules,
)

KEEP_ORDER: tuple[OfferFilter, ...] = (
    filter_spot,
    filter_hardware_size,
    filter_price_cap,
    filter_gang,
    filter_blocked_offers,
    filter_offer_rules,
)
"""`OFFER_FILTERS` in the order the decision runs them: each keeps an offer on its own fields
(and its group's), so the order changes no result, only how many offers the later ones see."""

KEEP_GROUPS: dict[GroupFilter, Callable[[Env], GroupKeep | None]] = {
    filter_health: keep_healthy,
    filter_blocked_sites: keep_unblocked_sites,
    filter_tenant_sites: keep_tenant_sites,
    filter_bursting: keep_bursting,
    filter_images: keep_images,
    filter_hardware_model: keep_hardware_model,
    filter_residency: keep_residency,
    filter_export: keep_export,
    filter_rules: keep_rules,
}
KEEP_OFFERS: dict[OfferFilter, Callable[[Env], OfferKeep | None]] = {
    filter_hardware_size: keep_hardware_size,
    filter_spot: keep_spot,
    filter_gang: keep_gang,
    filter_price_cap: keep_price_cap,
    filter_blocked_offers: keep_unblocked_offers,
    filter_offer_rules: keep_offer_rules,
}


def keep_groups(gf: GroupFilter, env: Env) -> GroupKeep | None:
    """The keep-only form of a group filter for this decision (None: it keeps every group)."""
    twin = KEEP_GROUPS.get(gf)
    if twin is None:
        return lambda groups: gf(groups, env)[0]
    return twin(env)


def keep_offers(of: OfferFilter, env: Env) -> OfferKeep | None:
    """The keep-only form of an offer filter for this decision (None: it keeps every offer)."""
    twin = KEEP_OFFERS.get(of)
    if twin is None:
        return per_group(of, env)
    return twin(env)


def passing(candidates: tuple[Group, ...], env: Env, parts: bool = True) -> list[tuple[Group, list[Offer]]]:
    """The candidate groups passing every group filter, each with its offers passing every offer
    filter; `parts`: keep whole groups as their market parts (`Group.part`, built once per
    snapshot: worth it when the snapshot serves more than one decision)."""
    groups = list(candidates)
    for gf in GROUP_FILTERS:  # verdicts are per group, so filtering a subset keeps the same groups
        if not groups:
            return []
        keep = keep_groups(gf, env)
        if keep is not None:
            groups = keep(groups)
    kept: Kept = keep_market_and_size(env, parts)([(g, g.offers) for g in groups if g.offers])
    for of in _AFTER_SIZE:  # each step over every group at once: one call per filter, not per group
        if not kept:
            break
        step = keep_offers(of, env)
        if step is not None:
            kept = step(kept)
    return kept


_AFTER_SIZE = tuple(of for of in KEEP_ORDER if of is not filter_spot and of is not filter_hardware_size)


def keep_market_and_size(env: Env, parts: bool = True) -> OfferKeep:
    """`keep_spot` then `keep_hardware_size` in one pass. With `parts`, a group's whole offers
    get the part of the job's market (`Group.part`), kept whole when its smallest sizes fit
    the job, its kept cell of the offers with enough accelerators (`Part.at_least`) when only
    the count can reject, else tested offer by offer; any other list is tested offer by offer."""
    spot = False if env.spot_never else True if env.spot_required else None
    if not parts:
        return keep_hardware_size(env) if spot is None else _keep_market_and_size(env, spot)
    count, cpus, mem, policy = env.count, env.cpus, env.memory_gb, env.policy
    plain = _keep_market_and_size(env, spot)

    def keep(pairs: Kept) -> Kept:
        out: Kept = []
        for g, offers in pairs:
            if offers is not g.offers:
                out += plain([(g, offers)])
                continue
            part = g.part(spot, policy)
            if part.fits(count, cpus, mem):
                if part:
                    out.append((g, part))
                continue
            if part.min_cpus >= cpus and part.min_memory >= mem:  # only the count can reject
                cell = part.at_least(count)
                if cell:
                    out.append((g, cell))
                continue
            picked = [
                i
                for i, d in enumerate(part.fields)
                if not (
                    d["count"] < count
                    or ((c := d["cpus"]) and c < cpus)
                    or ((m := d["memory_gb"]) and m < mem)
                )
            ]
            if picked:
                out.append((g, part.subset(picked)))
        return out

    return keep


def _keep_market_and_size(env: Env, spot: bool | None) -> OfferKeep:
    """The market and size tests on each offer's field mapping (`spot` None: either market)."""
    count, cpus, mem = env.count, env.cpus, env.memory_gb
    return lambda pairs: [
        (g, kept)
        for g, offers in pairs
        if (
            kept := [
                o
                for o, d in zip(offers, g.field_maps(offers), strict=True)
                if (spot is None or d["spot"] is spot)
                and not (
                    d["count"] < count
                    or ((c := d["cpus"]) and c < cpus)
                    or ((m := d["memory_gb"]) and m < mem)
                )
            ]
        )
    ]


def passing_plain(candidates: tuple[Group, ...], env: Env) -> list[tuple[Group, list[Offer]]]:
    """`passing` through the filters themselves, reasons built and dropped (the reference)."""
    groups = list(candidates)
    for gf in GROUP_FILTERS:
        if not groups:
            return []
        groups, _ = gf(groups, env)
    kept: list[tuple[Group, list[Offer]]] = []
    for g in groups:
        offers = g.offers
        for of in OFFER_FILTERS:
            offers, _ = of(g, offers, env)
            if not offers:
                break
        if offers:
            kept.append((g, offers))
    return kept
