"""Filter: the tenant must be declared, and the site among the tenant's allowed sites."""

from __future__ import annotations

from broker.placement._env import Env, Group
from broker.placement._filter import GroupKeep, GroupRejections, split_groups
from broker.placement.types import Reason

UNKNOWN_TENANT = "policy.tenant"
ALLOWED_SITES = "tenant.allowed_sites"


def _verdict(g: Group, env: Env) -> tuple[Reason, ...]:
    tenant = env.tenant
    if tenant is None:
        return (Reason(UNKNOWN_TENANT, f"tenant {env.tenant_id} is not declared in the policy"),)
    if tenant.allowed_sites is not None and g.site_id not in tenant.allowed_sites:
        allowed = ", ".join(tenant.allowed_sites) or "none"
        return (Reason(ALLOWED_SITES, f"tenant {tenant.id} may use only {allowed}"),)
    return ()


def filter_tenant_sites(groups: list[Group], env: Env) -> tuple[list[Group], GroupRejections]:
    """Drop every group for an undeclared tenant, and groups outside the tenant's allowed sites."""
    if env.tenant is not None and env.tenant.allowed_sites is None:
        return groups, []
    return split_groups(groups, env, _verdict)


def keep_tenant_sites(env: Env) -> GroupKeep | None:
    """`filter_tenant_sites`'s kept groups (None: every group)."""
    tenant = env.tenant
    if tenant is None:
        return lambda groups: []
    allowed = tenant.allowed_sites
    if allowed is None:
        return None
    return lambda groups: [g for g in groups if g.site_id in allowed]
