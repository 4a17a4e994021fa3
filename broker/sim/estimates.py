"""The runtime estimate a simulated user submits with a trace job (`Scenario.runtime_estimates`).

The trace gives actual runtimes only; the estimate is the actual runtime times the tenant's
bias times seeded lognormal noise, so the policy decides on what a user would write while
completion and billing follow the actual runtime. No knob: the estimate is exact.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable

from broker.sim.scenario import Scenario, ScenarioError

MIN_ESTIMATE_S = 60.0
"""The shortest estimate a user writes."""


def estimate_s(scenario: Scenario, tenant: str, index: int, actual_s: float, longest_s: float) -> float:
    """Job `index`'s runtime estimate in seconds (deterministic in the scenario's seed)."""
    knob = scenario.runtime_estimates
    if knob is None:
        return max(1.0, float(round(actual_s)))  # (a spec holds whole seconds; a trace may not)
    factor = knob.bias.get(tenant, knob.default_bias)
    if knob.sigma > 0:
        factor *= math.exp(random.Random(f"{scenario.seed}:estimate:{index}").gauss(0.0, knob.sigma))
    return min(longest_s, max(MIN_ESTIMATE_S, round(actual_s * factor)))


def check_bias(scenario: Scenario, tenants: Iterable[str]) -> None:
    """Refuse a bias for a tenant no job can have (a typo would silently get `default_bias`)."""
    knob = scenario.runtime_estimates
    known = set(tenants)
    unknown = sorted(t for t in (knob.bias if knob is not None else {}) if t not in known)
    if unknown:
        raise ScenarioError(
            f"runtime_estimates.bias.{unknown[0]}: no such tenant (known: {', '.join(sorted(known))})"
        )
