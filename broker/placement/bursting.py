"""Filter: with `burst.enabled: false` no cloud site runs a job (on-prem sites only)."""

from __future__ import annotations

from broker.placement._env import Env, Group
from broker.placement._filter import GroupKeep, GroupRejections, split_groups
from broker.placement.types import Reason

BURST_OFF = "burst.enabled"


def _cloud(g: Group) -> bool:
    """A cloud site: one not described by partitions (as `broker.burst.inputs.onprem_sites`)."""
    return g.site is None or not g.site.partitions


def _verdict(g: Group, env: Env) -> tuple[Reason, ...]:
    if _cloud(g):
        return (Reason(BURST_OFF, f"bursting is off (burst.enabled: false): {g.site_id} is a cloud site"),)
    return ()


def filter_bursting(groups: list[Group], env: Env) -> tuple[list[Group], GroupRejections]:
    """Drop the cloud sites' groups when the policy turns bursting off."""
    if env.policy.burst.enabled:
        return groups, []
    return split_groups(groups, env, _verdict)


def keep_bursting(env: Env) -> GroupKeep | None:
    """`filter_bursting`'s kept groups (None: every group)."""
    if env.policy.burst.enabled:
        return None
    return lambda groups: [g for g in groups if not _cloud(g)]
