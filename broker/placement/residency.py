"""Filter: data residency (e.g. PIPL: cn-mainland data never leaves mainland China)."""

from __future__ import annotations

from broker.compliance.rules import render
from broker.model import Residency
from broker.placement._env import Env, Group
from broker.placement._filter import GroupKeep, GroupRejections, split_groups
from broker.placement.types import Reason


def _verdict(g: Group, env: Env) -> tuple[Reason, ...]:
    assert g.site is not None  # the health filter ran first
    if g.site.residency == env.residency:
        return ()
    rule = env.policy.compliance.residency
    return (Reason(rule.id, render(rule.reason, g.labels(env))),)


def filter_residency(groups: list[Group], env: Env) -> tuple[list[Group], GroupRejections]:
    """A job whose data_residency is a zone runs only at sites in that zone."""
    if env.residency == Residency.ANY.value:
        return groups, []
    return split_groups(groups, env, _verdict)


def keep_residency(env: Env) -> GroupKeep | None:
    """`filter_residency`'s kept groups (None: every group, the job's data may go anywhere)."""
    zone = env.residency
    if zone == Residency.ANY.value:
        return None
    return lambda groups: [g for g in groups if g.site is not None and g.site.residency == zone]
