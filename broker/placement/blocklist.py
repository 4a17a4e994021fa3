"""Filter: the failover blocklist (offer keys, site ids, `site/region` keys or `site/region/spot` for a
region's spot market, and what one quota counts there (`broker.quota_scope`), with a TTL upstream)."""

from __future__ import annotations

from broker.model import Offer
from broker.placement._env import Env, Group
from broker.placement._filter import (
    GroupKeep,
    GroupRejections,
    OfferKeep,
    OfferRejections,
    per_group,
    split_groups,
)
from broker.placement.types import Reason
from broker.quota_scope import QuotaScope

BLOCKED = "failover.blocked"


def _after(env: Env, key: str, generic: str) -> str:
    """What blocked `key`: the error the blocklist kept for it, else the generic cause."""
    return env.ctx.block_reasons.get(key) or generic


def _verdict(g: Group, env: Env) -> tuple[Reason, ...]:
    blocked = env.ctx.blocked
    if g.site_id in blocked:
        why = _after(env, g.site_id, "a capacity or quota error")
        return (Reason(BLOCKED, f"site {g.site_id} is blocked after {why}"),)
    region = g.site.region if g.site is not None else ""
    key = f"{g.site_id}/{region}"
    if region and key in blocked:
        # Regions are blocked after a quota error and a launch that timed out or whose transient
        # errors outlasted its retries (dispatch.health); a spot interruption blocks its pool only.
        generic = "a quota error, or a launch there that timed out or kept failing"
        why = _after(env, key, generic)
        return (Reason(BLOCKED, f"region {region} of {g.site_id} is blocked after {why}"),)
    return ()


def filter_blocked_sites(groups: list[Group], env: Env) -> tuple[list[Group], GroupRejections]:
    """Drop groups whose site or region is blocked."""
    if not env.ctx.blocked:
        return groups, []
    return split_groups(groups, env, _verdict)


def filter_blocked_offers(g: Group, offers: list[Offer], env: Env) -> tuple[list[Offer], OfferRejections]:
    """Drop offers whose key (site/zone/type/market) is blocked."""
    blocked = env.ctx.blocked
    if not blocked:
        return offers, []
    kept: list[Offer] = []
    rejected: OfferRejections = []
    quotas = [q for q in env.ctx.quotas if q.site == g.site_id]
    for o in offers:
        zone_key = f"{o.site}/{o.zone}" if o.zone else ""
        quota = next((q for q in quotas if q.covers(o, env.nodes)), None)
        if quota is not None:  # a quota counting this type and market (and gangs of this size)
            why = _after(env, quota.target, "a quota error")
            rejected.append((o, (Reason(BLOCKED, f"{o.key} is blocked after {why} ({_counted(quota)})"),)))
        elif o.spot and f"{o.site}/{o.region}/spot" in blocked:
            why = f"spot in region {o.region} of {o.site} is blocked after a spot quota error"
            why += " (on demand is not)"
            rejected.append((o, (Reason(BLOCKED, why),)))
        elif o.key in blocked:  # its capacity pool: a stock-out, or a spot interruption there
            why = _after(env, o.key, "a capacity error or a spot interruption")
            rejected.append((o, (Reason(BLOCKED, f"{o.key} is blocked after {why}"),)))
        elif zone_key and zone_key in blocked:
            why = _after(env, zone_key, "a capacity error")
            rejected.append((o, (Reason(BLOCKED, f"zone {o.zone} of {o.site} is blocked after {why}"),)))
        else:
            kept.append(o)
    return kept, rejected


def _counted(quota: QuotaScope) -> str:
    """What the quota that refused counts, in words ("the spot quota of families g,vt in us-east-1")."""
    market = {"spot": "spot ", "ondemand": "on-demand "}.get(quota.market, "")
    types = f" of families/types {','.join(quota.types)}" if quota.types else ""
    nodes = f", for jobs of {quota.nodes} or more nodes" if quota.nodes > 1 else ""
    return f"the {market}quota{types} in {quota.region}{nodes}"


def keep_unblocked_sites(env: Env) -> GroupKeep | None:
    """`filter_blocked_sites`'s kept groups (None: every group, nothing is blocked)."""
    if not env.ctx.blocked:
        return None
    return lambda groups: [g for g in groups if not _verdict(g, env)]


def keep_unblocked_offers(env: Env) -> OfferKeep | None:
    """`filter_blocked_offers`'s kept offers (None: every offer, nothing is blocked)."""
    if not env.ctx.blocked:
        return None
    return per_group(filter_blocked_offers, env)
