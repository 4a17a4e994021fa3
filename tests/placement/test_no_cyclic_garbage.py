"""A cold decision leaves no garbage that only the cycle collector can free (issue 15, "Cold
decisions, not only cached ones").

Dropped rule plans, verdict folds, snapshots and explanations must be freed by reference
counting: objects left in reference cycles make the collector run every few decisions, and a
collection inside a decision is part of its time (the cold p99's tail). A rule plan and its
per-site folds once referred to each other, leaving ~130 objects per cold decision.
"""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from broker.model import JobSpec, Offer, TenantId
from broker.placement import PlacementContext, forget_snapshots, place
from tests.placement.test_fast_rules import RULES, _catalog, _policy

JOBS = [
    {"resources": {"accelerators": {"count": 1}}, "spot": "never"},
    {"resources": {"accelerators": {"count": 8, "any_of": ["H100", "A800"]}}, "priority": "high"},
    {"resources": {"cpus": 16}, "labels": {"no-cloud": "1"}},
    {"resources": {"accelerators": {"count": 1, "min_memory_gb": 40}}, "data_residency": "cn-mainland"},
]


@pytest.mark.parametrize("default", ["allow", "deny"])
def test_cold_decisions_and_their_explanations_leave_no_cyclic_garbage(
    tmp_path: Path, offers: list[Offer], default: str
) -> None:
    policy = _policy(tmp_path, tuple(range(len(RULES))), default)
    catalog = _catalog(offers, 7)
    jobs = [
        JobSpec.model_validate({"name": "c", "command": ["run"], "runtime_estimate": f"{h}h", **spec})
        for h, spec in enumerate(JOBS, start=1)
    ]
    forget_snapshots()  # an earlier test's snapshot, dropped in the loop, is not this test's garbage
    place(jobs[0], TenantId("pku-nlp"), catalog, policy, PlacementContext())  # warm the lazy parts
    gc.collect()
    gc.disable()
    try:
        for tenant in ("pku-nlp", "zhipu-sme", "sg-partner", "nobody"):
            for job in jobs:
                policy.rules.clear()  # cold: plans, folds and verdicts dropped
                forget_snapshots()
                explanation = place(job, TenantId(tenant), catalog, policy, PlacementContext())
                assert len(explanation.offers) == len(catalog)  # the lazy parts built and dropped too
        policy.rules.clear()
        forget_snapshots()
        del explanation
        gc.set_debug(gc.DEBUG_SAVEALL)  # keep what the collector finds, to see whose it is
        gc.collect()
        ours = [o for o in gc.garbage if _broker_owned(o)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    # Only the broker's own objects count: a thread another test left behind (a gRPC channel's,
    # say) may drop cyclic garbage of its own while this loop runs.
    assert ours == [], f"{len(ours)} broker objects in reference cycles, e.g. {ours[:3]!r}"


def _broker_owned(obj: object) -> bool:
    """An instance of a broker class, or a function or method defined in a broker module."""
    module = getattr(obj, "__module__", None) if callable(obj) else type(obj).__module__
    return isinstance(module, str) and module.split(".")[0] == "broker"
