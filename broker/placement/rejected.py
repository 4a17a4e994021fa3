"""Why each rejected offer is rejected, for an explanation: the job's own misfits before the sites' state.

The filters run in `place()`'s order (health first: it drops the most for the least work). An
offer's reason was its first failing filter, so live, with a site out of service, every offer
there read `health.site`, and `szb explain` said `0 of 218 offers allowed: 218 health.site` for a
job that fits 7 of them at most. Here a rule about a site's or region's state now (health,
breaker, failover blocklist) is an offer's reason only when every other filter passes it.
Which offers are rejected does not change; only which reason each is charged to.
"""

from __future__ import annotations

from broker.model import Offer
from broker.placement._env import Env, Group
from broker.placement.blocklist import BLOCKED
from broker.placement.health import DRAINED, UNHEALTHY
from broker.placement.pipeline import GROUP_FILTERS, OFFER_FILTERS
from broker.placement.types import Reason

TRANSIENT_RULES = frozenset({UNHEALTHY, BLOCKED, DRAINED})
"""Rules about the state of a site (health, its breaker, an operator's drain) or of a region,
zone or pool (the failover blocklist): they pass once it heals or is back in service, unlike
every other rule about the job and offer."""

Rejected = list[tuple[Offer, tuple[Reason, ...]]]


def _transient(reasons: tuple[Reason, ...]) -> bool:
    return all(r.rule in TRANSIENT_RULES for r in reasons)


def rejections(groups: list[Group], env: Env) -> Rejected:
    """Each rejected offer of `groups` with its reasons (group order): its first failing filter
    among the lasting ones, else its first transient one."""
    held: dict[int, tuple[Reason, ...]] = {}  # id(group) -> the transient reasons it is held by
    out: Rejected = []
    for gf in GROUP_FILTERS:
        groups, group_rej = gf(groups, env)
        passing = []
        for g, reasons in group_rej:
            if _transient(reasons):
                held.setdefault(id(g), reasons)
                passing.append(g)  # judged by the lasting filters still
            else:
                out.extend((o, reasons) for o in g.offers)
        groups = [*groups, *passing]
    for g in groups:
        out.extend(_offer_rejections(g, env, held.get(id(g))))
    return out


def _offer_rejections(g: Group, env: Env, held: tuple[Reason, ...] | None) -> Rejected:
    """One group's rejected offers; `held`: the transient reasons its site or region has."""
    out: Rejected = []
    pending: dict[int, tuple[Reason, ...]] = {}  # id(offer) -> its transient reasons
    kept = g.offers
    for of in OFFER_FILTERS:
        kept, offer_rej = of(g, kept, env)
        passing = []
        for o, reasons in offer_rej:
            if _transient(reasons):
                pending.setdefault(id(o), reasons)
                passing.append(o)
            else:
                out.append((o, reasons))
        kept = [*kept, *passing]  # (a new list: `kept` may be the group's own)
        if not kept:
            break
    for o in kept:  # every lasting filter passes these
        why = held or pending.get(id(o))
        if why:
            out.append((o, why))
    return out
