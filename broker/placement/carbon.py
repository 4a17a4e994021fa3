"""Scorer: carbon cost = power (kW) x count x runtime (h) x site intensity (g/kWh) x price per gram.

Power per device comes from the accelerator catalog (`power_w`); CPU-only offers use the
policy's `default_power_w`.
"""

from __future__ import annotations

from broker.model import Offer
from broker.placement._env import Env, Group


def score_carbon(g: Group, offers: list[Offer], env: Env) -> list[float]:
    """The `carbon` term of each offer (policy currency)."""
    value, per_device = carbon_of(g, env)
    if per_device:
        return [value * o.count for o in offers]
    return [value] * len(offers)


def carbon_of(g: Group, env: Env) -> tuple[float, bool]:
    """The group's carbon term: (per device, True), or (per offer, False) when it is 0 or CPU-only."""
    policy = env.policy
    price_g = policy.objective.carbon_g_cost
    intensity = g.site.carbon_gco2_kwh if g.site is not None else 0.0
    if not price_g or not intensity:
        return 0.0, False
    spec = g.hw.spec
    if g.accelerator is None:
        return policy.document.default_power_w / 1000.0 * env.machine_h * intensity * price_g, False
    kw = (spec.power_w if spec is not None else policy.document.default_power_w) / 1000.0
    return kw * env.machine_h * intensity * price_g, True
