"""Scorer: carbon cost = power (kW) x count x runtime (h) x site intensity (g/kWh) x price per gram.

Power per device comes from the accelerator catalog (`power_w`); CPU-only offers use the
policy's `default_power_w`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from operator import mul

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


def carbon_terms(
    groups: Sequence[Group], present: Iterable[int], gids: list[int], counts: list[int], env: Env
) -> list[float]:
    """`score_carbon` over many offers at once (`gids`: each offer's group in `groups`): the same floats."""
    policy = env.policy
    price_g = policy.objective.carbon_g_cost
    if not price_g:
        return [0.0] * len(gids)
    machine_h, default_w = env.machine_h, policy.document.default_power_w
    value = [0.0] * len(groups)
    per_device = [False] * len(groups)  # the value is per accelerator: times the offer's count
    for gid in present:
        g = groups[gid]
        intensity = g.site.carbon_gco2_kwh if g.site is not None else 0.0
        if not intensity:
            continue
        if g.accelerator is None:
            value[gid] = default_w / 1000.0 * machine_h * intensity * price_g
        else:
            spec = g.hw.spec
            value[gid] = (
                (spec.power_w if spec is not None else default_w) / 1000.0 * machine_h * intensity * price_g
            )
            per_device[gid] = True
    if all(per_device[gid] for gid in present):
        return list(map(mul, map(value.__getitem__, gids), counts))
    return [value[gid] * c if per_device[gid] else value[gid] for gid, c in zip(gids, counts, strict=True)]
