"""Scorer: operator preference = site `preference_per_hour` x runtime x `objective.preference`.

Negative values favour a site (keep work on-prem), positive ones penalise it.
"""

from __future__ import annotations

from collections.abc import Sequence

from broker.model import Offer
from broker.placement._env import Env, Group


def score_preference(g: Group, offers: list[Offer], env: Env) -> list[float]:
    """The `preference` term of each offer (policy currency)."""
    per_hour = g.site.preference_per_hour if g.site is not None else 0.0
    value = per_hour * env.runtime_h * env.policy.objective.preference
    return [value] * len(offers)


def preference_terms(groups: Sequence[Group], sizes: Sequence[int], env: Env) -> list[float]:
    """`score_preference` over many offers at once (`groups[i]` holds the next `sizes[i]`)."""
    runtime_h, weight = env.runtime_h, env.policy.objective.preference
    out: list[float] = []
    for g, n in zip(groups, sizes, strict=True):
        out += [(g.site.preference_per_hour if g.site is not None else 0.0) * runtime_h * weight] * n
    return out
