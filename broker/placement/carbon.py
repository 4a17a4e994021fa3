"""Scorer: carbon cost = power (kW) x count x runtime (h) x site intensity (g/kWh) x price per gram.

Power per device comes from the accelerator catalog (`power_w`); CPU-only offers use the
policy's `default_power_w`.
"""

from __future__ import annotations

from collections.abc import Sequence

from broker.model import Offer
from broker.placement._env import Env, Group


def score_carbon(g: Group, offers: list[Offer], env: Env) -> list[float]:
    """The `carbon` term of each offer (policy currency)."""
    policy = env.policy
    price_g = policy.objective.carbon_g_cost
    intensity = g.site.carbon_gco2_kwh if g.site is not None else 0.0
    if not price_g or not intensity:
        return [0.0] * len(offers)
    spec = g.hw.spec
    if g.accelerator is None:
        return [policy.document.default_power_w / 1000.0 * env.machine_h * intensity * price_g] * len(offers)
    kw = (spec.power_w if spec is not None else policy.document.default_power_w) / 1000.0
    per_device = kw * env.machine_h * intensity * price_g
    return [per_device * o.count for o in offers]


def carbon_terms(groups: Sequence[Group], sizes: Sequence[int], counts: list[int], env: Env) -> list[float]:
    """`score_carbon` over many offers at once (`groups[i]` holds the next `sizes[i]`): the same floats."""
    policy = env.policy
    price_g = policy.objective.carbon_g_cost
    if not price_g:
        return [0.0] * len(counts)
    machine_h, default_w = env.machine_h, policy.document.default_power_w
    values: list[float] = []  # each offer's group value: the term itself, or per accelerator
    scaled: list[bool] = []  # the offer's term is its group value times its accelerator count
    for g, n in zip(groups, sizes, strict=True):
        intensity = g.site.carbon_gco2_kwh if g.site is not None else 0.0
        if not intensity:
            value, per_device = 0.0, False
        elif g.accelerator is None:
            value, per_device = default_w / 1000.0 * machine_h * intensity * price_g, False
        else:
            spec = g.hw.spec
            kw = (spec.power_w if spec is not None else default_w) / 1000.0
            value, per_device = kw * machine_h * intensity * price_g, True
        values += [value] * n
        scaled += [per_device] * n
    if all(scaled):
        return [v * c for v, c in zip(values, counts, strict=True)]
    return [v * c if s else v for v, c, s in zip(values, counts, scaled, strict=True)]
