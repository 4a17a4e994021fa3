"""Filter: export control (hardware class x site operator x tenant jurisdiction x licences).

Driven by `compliance.export` and the regime's classification: a site operated from one
of `operator_countries` may not give hardware of a listed class to a tenant headquartered
in a listed country group unless the tenant holds a licence for that class.
"""

from __future__ import annotations

from broker.compliance.rules import render
from broker.placement._env import Env, Group
from broker.placement._filter import GroupKeep, GroupRejections, split_groups
from broker.placement.types import Reason


def _verdict(g: Group, env: Env) -> tuple[Reason, ...]:
    rule = env.policy.compliance.export
    assert rule is not None and g.site is not None
    operator = g.site.operator_country or g.site.country
    if operator not in rule.operator_countries:
        return ()
    cls = g.hw.classification.cls
    if cls not in rule.classes:
        return ()
    tenant = env.tenant
    if tenant is None:
        return ()  # the tenant filter already rejected everything
    if cls in tenant.export_licences:
        return ()
    groups = [grp for grp in env.policy.tenant_groups(tenant) if grp in rule.tenant_country_groups]
    if not groups:
        return ()
    labels = g.labels(env)
    labels["tenant_group"] = "/".join(groups)
    message = render(rule.reason, labels)
    if (g.hw.spec is None and g.accelerator is not None) or "assumed" in g.hw.classification.reason:
        message += f" ({g.hw.classification.reason})"
    return (Reason(rule.id, message),)


def filter_export(groups: list[Group], env: Env) -> tuple[list[Group], GroupRejections]:
    """Apply the policy's export rule; a no-op when `compliance.export` is null."""
    rule = env.policy.compliance.export
    if rule is None:
        return groups, []
    tenant = env.tenant
    if tenant is None or not any(
        grp in rule.tenant_country_groups for grp in env.policy.tenant_groups(tenant)
    ):
        return groups, []  # the rule cannot apply to this tenant: `_verdict` keeps every group
    return split_groups(groups, env, _verdict)


def keep_export(env: Env) -> GroupKeep | None:
    """`filter_export`'s kept groups (None: every group, the rule cannot apply to this tenant)."""
    rule = env.policy.compliance.export
    tenant = env.tenant
    if rule is None or tenant is None:
        return None
    if not any(grp in rule.tenant_country_groups for grp in env.policy.tenant_groups(tenant)):
        return None
    operators, classes, licences = rule.operator_countries, rule.classes, tenant.export_licences

    def keep(groups: list[Group]) -> list[Group]:
        out = []
        for g in groups:
            assert g.site is not None
            cls = g.hw.classification.cls
            if (
                (g.site.operator_country or g.site.country) not in operators
                or cls not in classes
                or cls in licences
            ):
                out.append(g)
        return out

    return keep
