"""Scorer: carbon cost = power (kW) x count x runtime (h) x site intensity (g/kWh) x price per gram.

Power per device comes from the accelerator catalog (`power_w`); CPU-only offers use the
policy's `default_power_w`.
"""

from __future__ import annotations

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


def carbon_terms(kept: list[tuple[Group, list[Offer]]], env: Env) -> list[float]:
    """`score_carbon` over every kept group at once: the same floats, one list."""
    policy = env.policy
    price_g = policy.objective.carbon_g_cost
    if not price_g:
        return [0.0] * sum(len(offers) for _, offers in kept)
    machine_h, default_w = env.machine_h, policy.document.default_power_w
    out: list[float] = []
    for g, offers in kept:
        intensity = g.site.carbon_gco2_kwh if g.site is not None else 0.0
        if not intensity:
            out += [0.0] * len(offers)
        elif g.accelerator is None:
            out += [default_w / 1000.0 * machine_h * intensity * price_g] * len(offers)
        else:
            spec = g.hw.spec
            per_device = (
                (spec.power_w if spec is not None else default_w) / 1000.0 * machine_h * intensity * price_g
            )
            out += [per_device * o.count for o in offers]
    return out
