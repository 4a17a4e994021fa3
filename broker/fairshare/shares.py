"""A tenant's resolved share: its own settings over its kind's defaults over the policy's. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from broker.model import Priority
from broker.policy import Policy
from broker.policy.schema import Partition, TenantShare


@dataclass(frozen=True, slots=True)
class Share:
    """What a tenant is entitled to on-prem, with every field filled in."""

    weight: float = 1.0
    quota: Mapping[str, int] = field(default_factory=dict)
    """Guaranteed units (accelerators, or cores on a CPU-only partition) per `site/partition`."""
    may_borrow: bool = True
    priorities: frozenset[Priority] = frozenset({Priority.LOW, Priority.NORMAL})


def _layers(policy: Policy, tenant_id: str) -> list[TenantShare]:
    fs = policy.document.fair_share
    layers = [fs.defaults]
    tenant = policy.tenant(tenant_id)
    if tenant is not None:
        kind = fs.by_tenant_kind.get(tenant.kind)
        if kind is not None:
            layers.append(kind)
        layers.append(tenant.share)
    return layers


def resolve_share(policy: Policy, tenant_id: str) -> Share:
    """The tenant's weight, quotas, borrowing and priority grants (an undeclared tenant gets the defaults)."""
    weight, borrow = 1.0, True
    quota: dict[str, int] = {}
    prios: tuple[Priority, ...] = (Priority.LOW, Priority.NORMAL)
    for layer in _layers(policy, tenant_id):
        weight = layer.weight if layer.weight is not None else weight
        quota = dict(layer.quota) if layer.quota is not None else quota
        borrow = layer.may_borrow if layer.may_borrow is not None else borrow
        prios = layer.priorities if layer.priorities is not None else prios
    return Share(weight=weight, quota=quota, may_borrow=borrow, priorities=frozenset(prios))


def priority_refusal(policy: Policy, tenant_id: str, priority: Priority) -> str | None:
    """Why the tenant may not declare this priority (None when it may)."""
    allowed = resolve_share(policy, tenant_id).priorities
    if priority in allowed:
        return None
    names = ", ".join(p.value for p in Priority if p in allowed) or "none"
    return (
        f"tenant {tenant_id!r} is not granted priority {priority.value!r} "
        f"(allowed: {names}; an operator grants it under fair_share or the tenant's share.priorities)"
    )


def lowered_priority(policy: Policy, tenant_id: str, priority: Priority) -> tuple[Priority, str] | None:
    """What a queued job whose priority the tenant is no longer granted drops to (a reload took
    it back): the highest it is granted below it, and why; None when it keeps its own."""
    if (why := priority_refusal(policy, tenant_id, priority)) is None:
        return None
    ranks = list(Priority)  # low, normal, high
    allowed = resolve_share(policy, tenant_id).priorities
    lower = [p for p in ranks[: ranks.index(priority)] if p in allowed]
    return (lower[-1], why) if lower else None


def onprem_partitions(policy: Policy) -> dict[str, Partition]:
    """Every on-prem partition by its `site/partition` key (the key quotas and offers use)."""
    return {f"{site.id}/{p.name}": p for site in policy.sites for p in site.partitions}


def partition_units(part: Partition) -> int:
    """Capacity of a partition in quota units: accelerators, or cores when it has none."""
    if part.accelerator is not None:
        return part.count_per_node * part.nodes
    return int(part.cpus_per_node * part.nodes)


class BatchIdentity(NamedTuple):
    """Who a job is at a batch system (Slurm): account, QOS and Unix user ("": the site's)."""

    account: str
    qos: str
    user: str


def batch_account(policy: Policy, tenant_id: str, priority: Priority) -> BatchIdentity:
    """The tenant's job at a batch system: its `batch` block, else its id as the account."""
    tenant = policy.tenant(tenant_id)
    account = (tenant.batch.account if tenant is not None else None) or tenant_id
    # The tenant's own QOS over the policy's per-class map, as its own share settings layer over
    # the defaults: an operator who gave one tenant a QOS meant that tenant's jobs to run under it.
    own = tenant.batch.qos if tenant is not None else None
    qos = own or policy.document.fair_share.qos_by_priority.get(priority)
    return BatchIdentity(account, qos or "", (tenant.batch.user if tenant is not None else None) or "")
