"""A decision's score columns as float64 arrays: the scorers' floats, one array step per operation.

IEEE double arithmetic is the same in numpy as in Python: the elementwise product (or sum)
of two float64 arrays is, offer by offer, the float Python's `*` (or `+`) gives on the same
two floats, and an int converts to the same double either way. So each column is computed
with its scorer's operations in its scorer's order (`cost = hourly × (node-hours × price
weight)`, `carbon = ((kW × node-hours) × intensity) × price per gram [× count]`,
`score = (((cost + voucher) + wait) + carbon) + preference`), over every kept offer at once
instead of one Python step per offer. `tests/placement/test_vector.py` pins it against the
scorers and `rank.best`. numpy is imported here only: `scored` loads this module on a
decision's first scoring, so the CLI's import does not pay for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from broker.placement._env import PER_DEVICE, ZERO
from broker.placement.cost import voucher_columns
from broker.placement.rank import Q

if TYPE_CHECKING:
    from broker.placement._env import Env, Group
    from broker.placement.parts import Scoring

Floats = npt.NDArray[np.float64]


def stack(
    hourly: list[float],
    waits: list[float],
    counts: list[int],
    scoring: Sequence[Scoring],
    sizes: Sequence[int],
) -> Floats:
    """The offers' scoring values as one 7 x n array: hourly price, wait term, count, then their
    group's carbon kW, intensity, carbon mode and preference per hour (`Group.scoring`;
    `scoring[i]` is the next `sizes[i]` offers' group's)."""
    rows = np.array((hourly, waits, counts), dtype=np.float64).reshape(3, -1)
    groups = np.array(scoring, dtype=np.float64).reshape(-1, 4).T
    return np.concatenate((rows, np.repeat(groups, sizes, axis=1)))


def gather(arrays: list[Floats]) -> Floats:
    """Parts' `stack`s side by side (7 x the offers of all of them, in order)."""
    return np.concatenate(arrays, axis=1) if arrays else np.zeros((7, 0))


@np.errstate(over="ignore", invalid="ignore")  # as silent as Python's floats going to inf or NaN
def columns(
    values: Floats, groups: Sequence[Group], sizes: Sequence[int], env: Env
) -> tuple[Floats, ...] | None:
    """The five terms of every offer (cost, voucher, wait, carbon, preference), as the scorers
    compute them, from `stack`'s values (`groups[i]` holds the next `sizes[i]` offers). None
    when a term would not be a float (the caller scores as lists)."""
    policy, machine_h = env.policy, env.machine_h
    objective = policy.objective
    hourly, waits, counts, kw, intensity, mode, per_hour = values
    costs = hourly * (machine_h * objective.price)
    n = len(costs)
    tenant = env.tenant
    if tenant is None or not tenant.vouchers:
        vouchers = np.zeros(n)
    else:  # the per-group voucher choice, in Python (same floats)
        found = voucher_columns(groups, sizes, costs.tolist(), env)
        if any(x.__class__ is not float for x in found):
            return None  # a balance given as an int is a term of its own type: the scorers' lists
        vouchers = np.array(found, dtype=np.float64)
    price_g = objective.carbon_g_cost
    if price_g:  # each offer's group value, the same float for every offer of the group
        each = np.where(mode == ZERO, 0.0, ((kw * machine_h) * intensity) * price_g)
        carbon = np.where(mode == PER_DEVICE, each * counts, each)
    else:
        carbon = np.zeros(n)
    preference = (per_hour * env.runtime_h) * objective.preference
    return costs, vouchers, waits, carbon, preference


@np.errstate(over="ignore", invalid="ignore")
def total(cols: tuple[Floats, ...]) -> Floats:
    """`c + v + w + k + p` offer by offer, in that order."""
    c, v, w, k, p = cols
    return (((c + v) + w) + k) + p


def ties(scores: Floats) -> list[int] | None:
    """The indexes `Scored._best` keeps as tied for the lowest score (None: a NaN is among the
    scores, where Python's `min` depends on the order: the caller runs the list form)."""
    low = scores.min()
    if low != low:
        return None
    lowest = float(low)
    top, near = round(lowest, Q), lowest + 1e-5
    return [i for i in np.flatnonzero(scores <= near).tolist() if round(float(scores[i]), Q) == top]
