"""Per-tenant figures of a run: waits, slowdown, on-prem share used vs entitled, Jain's index.

A tenant's *entitled* share of the on-prem accelerator-hours actually used is its weighted
max-min fair share (water-filling): weights from the policy's fair_share, each tenant capped
at what it asked for (accelerator-hours of its jobs), so a tenant that asked for little is
not counted as wronged. Jain's index is taken over used/entitled across tenants: 1.0 when
every tenant got exactly its entitlement, 1/n when one tenant got everything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from broker.fairshare import resolve_share
from broker.policy import Policy
from broker.sim.metrics import JobRecord, RunResult, late

MIN_RUNTIME_S = 10.0
"""Slowdown is bounded below this runtime (a 1 s job waiting 1 min is not 60× worse off)."""


def water_fill(total: float, weights: Mapping[str, float], caps: Mapping[str, float]) -> dict[str, float]:
    """Weighted max-min fair split of `total`, no tenant above its cap."""
    out = dict.fromkeys(weights, 0.0)
    left, active = total, {t for t in weights if caps.get(t, 0.0) > 0}
    while left > 1e-9 and active:
        w = sum(weights[t] for t in active)
        step = min((caps[t] - out[t]) / weights[t] for t in active)
        give = min(step, left / w)
        for t in active:
            out[t] += give * weights[t]
        left -= give * w
        active = {t for t in active if caps[t] - out[t] > 1e-9}
    return out


def jain(values: list[float]) -> float | None:
    if not values:
        return None
    sq = sum(v * v for v in values)
    return (sum(values) ** 2) / (len(values) * sq) if sq > 0 else 1.0


def tenant_summary(run: RunResult, policy: Policy) -> dict[str, Any]:
    """Per-tenant waits, slowdown, share of on-prem used vs entitled, and Jain's fairness index."""
    by: dict[str, list[JobRecord]] = {}
    for r in run.records:
        if not r.rejected:
            by.setdefault(r.tenant, []).append(r)
    used = {t: sum(r.onprem_acc_h for r in recs) for t, recs in by.items()}
    # What a tenant asked of the scarce pool: the accelerator-hours of all its jobs.
    asked = {t: sum(r.demand_h for r in recs) for t, recs in by.items()}
    total = sum(used.values())
    weights = {t: resolve_share(policy, t).weight for t in by}
    entitled = water_fill(total, weights, asked)
    tenants: dict[str, Any] = {}
    ratios = []
    for t, recs in sorted(by.items()):
        started = [r for r in recs if not math.isnan(r.start_s)]
        waits = np.array([r.wait_s for r in started], dtype=float)
        slow = np.array(
            [(r.wait_s + max(r.runtime_s, MIN_RUNTIME_S)) / max(r.runtime_s, MIN_RUNTIME_S) for r in started],
            dtype=float,
        )
        share = used[t] / total if total else 0.0
        ent = entitled[t] / total if total else 0.0
        ratio = share / ent if ent > 0 else None
        if ratio is not None:
            ratios.append(ratio)
        tenants[t] = {
            "jobs": len(recs),
            "never_started": len(recs) - len(started),
            "p50_wait_s": round(float(np.percentile(waits, 50)), 1) if waits.size else None,
            "p95_wait_s": round(float(np.percentile(waits, 95)), 1) if waits.size else None,
            "max_wait_s": round(float(np.median([r.max_wait_s for r in recs])), 1),
            "slo_attainment": round(1 - sum(1 for r in recs if late(r)) / len(recs), 4),
            "mean_slowdown": round(float(slow.mean()), 2) if slow.size else None,
            "p95_slowdown": round(float(np.percentile(slow, 95)), 2) if slow.size else None,
            "weight": weights[t],
            "onprem_share_used": round(share, 4),
            "onprem_share_entitled": round(ent, 4),
            "used_over_entitled": None if ratio is None else round(ratio, 3),
            "burst_fraction": round(sum(1 for r in recs if r.burst) / len(recs), 4),
        }
    j = jain(ratios)
    return {"tenants": tenants, "jain_index": None if j is None else round(j, 4)}
