"""Cross-checks of the `fair_share` section and tenants' `share` blocks (after the schema validated)."""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol

from broker.policy.schema import PolicyDocument, TenantShare


class Report(Protocol):
    def __call__(self, loc: list[str | int], message: str, *, key: bool = False) -> None: ...


def check_fair_share(document: PolicyDocument, at: Report) -> None:
    """Quotas name known on-prem partitions, fit them, and together never promise more than exists."""
    parts = {f"{s.id}/{p.name}": p for s in document.sites for p in s.partitions}
    units = {
        key: (p.count_per_node * p.nodes if p.accelerator is not None else int(p.cpus_per_node * p.nodes))
        for key, p in parts.items()
    }
    fs = document.fair_share

    def check_quota(share: TenantShare, loc: list[str | int]) -> None:
        for key, n in (share.quota or {}).items():
            where = [*loc, "quota", key]
            dotted = ".".join(str(p) for p in where)
            if key not in parts:
                known = ", ".join(parts) or "none: no site has partitions"
                at(where, f"{dotted}: unknown on-prem partition {key!r} (known: {known})", key=True)
            elif n > units[key]:
                at(where, f"{dotted}: {n} exceeds the partition's capacity of {units[key]}")

    _check_settings(document, at)
    if fs.defaults.quota:
        at(
            ["fair_share", "defaults", "quota"],
            "fair_share.defaults.quota: guaranteed quotas are granted per tenant or per tenant kind, "
            "not to every tenant",
        )
    for kind, share in fs.by_tenant_kind.items():
        check_quota(share, ["fair_share", "by_tenant_kind", kind])
    promised: dict[str, int] = {}
    first: dict[str, list[str | int]] = {}
    for i, tenant in enumerate(document.tenants):
        check_quota(tenant.share, ["tenants", i, "share"])
        loc: list[str | int]
        if tenant.share.quota is not None:
            quota, loc = tenant.share.quota, ["tenants", i, "share", "quota"]
        elif (kind_share := fs.by_tenant_kind.get(tenant.kind)) is not None and kind_share.quota:
            quota, loc = kind_share.quota, ["fair_share", "by_tenant_kind", tenant.kind, "quota"]
        else:
            continue
        for key, n in quota.items():
            if key not in units or n > units[key]:
                continue  # reported above
            promised[key] = promised.get(key, 0) + n
            first.setdefault(key, [*loc, key])
            if promised[key] > units[key] and promised[key] - n <= units[key]:
                at(
                    [*loc, key],
                    f"{'.'.join(str(p) for p in [*loc, key])}: guaranteed quotas on {key} add up to "
                    f"{promised[key]} (tenants up to {tenant.id!r}), more than its capacity of {units[key]}",
                )


def _check_settings(document: PolicyDocument, at: Report) -> None:
    """No setting that silently turns a feature off: a zero reclaim window, an empty priority grant."""
    fs = document.fair_share
    # Either at zero is a zero waste budget: reclaim would never preempt.
    rc = fs.reclaim
    budget = {"window": rc.window > timedelta(0), "max_capacity_share": rc.max_capacity_share > 0}
    for key in (k for k, positive in budget.items() if not positive):
        at(
            ["fair_share", "reclaim", key],
            f"fair_share.reclaim.{key}: must be > 0 "
            "(to turn reclaim off, set fair_share.reclaim.enabled: false)",
        )
    shares: list[tuple[list[str | int], TenantShare]] = [(["fair_share", "defaults"], fs.defaults)]
    shares += [(["fair_share", "by_tenant_kind", k], s) for k, s in fs.by_tenant_kind.items()]
    shares += [(["tenants", i, "share"], t.share) for i, t in enumerate(document.tenants)]
    for where, share in shares:
        if share.priorities is not None and not share.priorities:  # every job would be refused
            dotted = ".".join(map(str, [*where, "priorities"]))
            at([*where, "priorities"], f"{dotted}: must grant one priority class or more (low, normal, high)")
