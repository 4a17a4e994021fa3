"""Scorer: expected wait cost = expected wait (hours) x `objective.wait_hour_cost`.

The wait comes from the offer (`expected_wait_s`, filled by live adapters from queue
state or provisioning time); static offers carry the partition's configured estimate.
"""

from __future__ import annotations

from broker.model import Offer
from broker.placement._env import Env, Group


def score_wait(g: Group, offers: list[Offer], env: Env) -> list[float]:
    """The `wait` term of each offer (policy currency)."""
    per_second = env.policy.objective.wait_hour_cost / 3600.0
    if not per_second:
        return [0.0] * len(offers)
    return [o.expected_wait_s * per_second for o in offers]
