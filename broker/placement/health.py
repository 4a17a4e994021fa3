"""Filter: the site must be known to the policy, in service (not drained by an operator) and
healthy (provider circuit breaker closed)."""

from __future__ import annotations

from broker.placement._env import Env, Group
from broker.placement._filter import GroupKeep, GroupRejections, split_groups
from broker.placement.types import Reason

UNKNOWN_SITE = "policy.site"
UNHEALTHY = "health.site"
DRAINED = "operator.drain"
_HEALTH_KINDS = ("circuit open", "capacity unavailable", "cannot terminate its instances")


def health_summary(reason: str) -> str:
    """What a tenant may know of a sick site: the kind of trouble, never the provider's text
    (account ids, IAM names: the operator's business, shown in an operator's `szb status`)."""
    return next((kind for kind in _HEALTH_KINDS if reason.startswith(kind)), "unavailable")


def _verdict(g: Group, env: Env) -> tuple[Reason, ...]:
    if g.site is None:
        return (Reason(UNKNOWN_SITE, f"site {g.site_id} is not declared in the policy"),)
    drained = env.ctx.drained_sites.get(g.site_id)  # type: ignore[call-overload]
    if drained is not None:  # (the operator's own words: written for whoever waits on the site)
        return (Reason(DRAINED, f"site {g.site_id} {drained}"),)
    why = env.ctx.unhealthy_sites.get(g.site_id)  # type: ignore[call-overload]
    if why is not None:
        # Rejections reach tenants (job reasons, explain, offers): the kind, not the text.
        return (Reason(UNHEALTHY, f"site {g.site_id} is unhealthy: {health_summary(why)}"),)
    return ()


def filter_health(groups: list[Group], env: Env) -> tuple[list[Group], GroupRejections]:
    """Drop groups at sites the policy does not declare, an operator drained, or the dispatcher
    marked unhealthy."""
    if not env.ctx.unhealthy_sites and not env.ctx.drained_sites:
        kept = [g for g in groups if g.site is not None]
        if len(kept) == len(groups):
            return kept, []
    return split_groups(groups, env, _verdict)


def keep_healthy(env: Env) -> GroupKeep:
    """`filter_health`'s kept groups, without reasons."""
    sick, drained = env.ctx.unhealthy_sites, env.ctx.drained_sites
    if not sick and not drained:
        return lambda groups: [g for g in groups if g.site is not None]
    out = {**sick, **drained}
    get = out.get
    return lambda groups: [g for g in groups if g.site is not None and get(g.site_id) is None]  # type: ignore[call-overload]
