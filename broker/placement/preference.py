"""Scorer: operator preference = site `preference_per_hour` x runtime x `objective.preference`.

Negative values favour a site (keep work on-prem), positive ones penalise it.
"""

from __future__ import annotations

from broker.model import Offer
from broker.placement._env import Env, Group


def score_preference(g: Group, offers: list[Offer], env: Env) -> list[float]:
    """The `preference` term of each offer (policy currency)."""
    return [preference_of(g, env)] * len(offers)


def preference_of(g: Group, env: Env) -> float:
    """The group's `preference` term (the same for each of its offers)."""
    per_hour = g.site.preference_per_hour if g.site is not None else 0.0
    return per_hour * env.runtime_h * env.policy.objective.preference
