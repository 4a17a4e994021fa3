"""A trace checked against the policy it is simulated under: tenants and accelerators it knows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from broker.catalog.accelerators import normalize
from broker.policy import Policy
from broker.policy.offers import static_offers
from broker.sim.traces import TraceError, TraceJob
from broker.validation import did_you_mean

MODEL_COLUMN = {"csv": "accelerator", "alibaba-v2023": "gpu_spec", "alibaba-spot-v2026": "gpu_model"}
"""The column a trace format names its jobs' accelerators in."""


def vet_trace(
    trace: Sequence[TraceJob],
    policy: Policy,
    path: Path | str,
    fmt: str = "csv",
    *,
    ignore_pool: bool = False,
) -> None:
    """TraceError naming every tenant and accelerator the policy does not know, each once at its
    first row (its jobs would only be refused, which reads as a policy result, not a typo).
    `ignore_pool`: the scenario drops the Alibaba traces' own pool models (`gpu_spec: ignore`),
    so those are not checked."""
    tenants = [t.id for t in policy.tenants]
    offered = {normalize(o.accelerator): o.accelerator for o in static_offers(policy) if o.accelerator}
    names = [*policy.accelerators.names(), *offered.values()]
    found: dict[tuple[str, str], list[int]] = {}  # (column, name) -> its rows
    for tj in trace:
        if tj.tenant is not None and tenants and tj.tenant not in tenants:
            found.setdefault(("tenant", tj.tenant), []).append(tj.line)
        for name in () if ignore_pool and tj.gpu_spec else tj.accelerators:
            if policy.accelerators.get(name) is None and normalize(name) not in offered:
                found.setdefault((MODEL_COLUMN.get(fmt, "accelerator"), name), []).append(tj.line)
    problems = []
    for (column, name), lines in found.items():
        if column == "tenant":
            hint = did_you_mean(name, tenants) or f" (the policy's tenants: {', '.join(tenants)})"
            why = f"tenant: {name!r} is not a tenant of the policy{hint}"
        else:
            why = f"{column}: unknown accelerator {name!r}{did_you_mean(name, names, cutoff=0.5)}"
        more = f" ({len(lines)} rows)" if len(lines) > 1 else ""
        problems.append((min(lines), f"{path}:{min(lines)}: {why}{more}"))
    if problems:  # (the trace is in submit order: the rows' own order reads better)
        raise TraceError("\n".join(text for _, text in sorted(problems)))
