"""Each tenant's learned ratio of actual to estimated runtime. Pure.

Projections stretch a job's runtime estimate by its tenant's ratio: a tenant whose jobs ran
half their estimates gets projections half as long. The ratio is learned from the tenant's
newest `WINDOW` finished jobs: their median actual/estimate, stretched by how much the
tenant's estimates err job by job (`SPREAD_Z` robust standard deviations of log(actual /
estimate), from the median absolute deviation, so one job that hung moves neither), clamped
to [`LOW`, `HIGH`]; no history gives 1.0, and fewer than `FEW` jobs only part of the way (one
short test job is no measure of the tenant's long ones). A tenant whose jobs all miss their estimates by the
same factor gets that factor; one whose jobs scatter around it gets projections that a
running job beats about 5 times in 6, so a waiter is not promised a start that the median job
would give and every other job breaks. The live dispatcher learns it from the store
(`broker.dispatch.runtimes`), the simulator from the jobs it finishes (`RatioLearner`): one
rule, both sides.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import deque
from collections.abc import Iterable, Sequence

WINDOW = 50
"""Finished jobs per tenant the ratio is learned from (the newest ones)."""
LOW, HIGH = 0.25, 4.0
"""The ratio's clamp: an estimate is never taken as more than 4x too long or too short."""


FEW = 5
"""Below this many finished jobs a tenant's ratio moves from 1.0 by that share of its log: one
2 s job against a 60 s estimate had clamped its 20-minute GPU jobs' projections to 0.25 (now 0.76)."""

SPREAD_Z = 1.0
"""How many of the tenant's robust standard deviations of log(actual/estimate) a projection
adds to the median: with z = 1, about 5 in 6 of the tenant's jobs end before their projected end."""
_MAD_TO_SD = 1.4826
"""A normal distribution's standard deviation over its median absolute deviation."""


def work_s(spans: Sequence[float], checkpoint_s: float | None) -> float:
    """Seconds of work a job's runs did, oldest first: a run cut short kept what its last checkpoint
    saved (nothing without checkpoints: the next run began from zero); the last ran to its end."""
    if not spans:
        return 0.0
    if not checkpoint_s or checkpoint_s <= 0:
        return spans[-1]
    return sum(s - s % checkpoint_s for s in spans[:-1]) + spans[-1]


def learned_ratio(runs: Iterable[tuple[float, float]]) -> float:
    """The ratio a projection stretches estimates by: the median actual/estimate of (estimate,
    actual) seconds pairs, times `SPREAD_Z` robust standard deviations of the log ratio, clamped;
    1.0 without history."""
    ratios = [actual / est for est, actual in runs if est > 0 and actual >= 0]
    return _from_ratios(ratios, [_log(r) for r in ratios])


def _from_ratios(ratios: list[float], logs: list[float]) -> float:
    """`learned_ratio` from the counted ratios and their logs (medians only: any order will do)."""
    if not ratios:
        return 1.0
    mid = statistics.median(logs)
    spread = _MAD_TO_SD * statistics.median([abs(x - mid) for x in logs])
    # Never past the longest run seen: a history of two clusters (no-op runs and full ones) has a
    # wide spread, and one more early finish raised the ratio 0.60 -> 1.09 above every run (0.74).
    stretched = min(HIGH, max(LOW, min(statistics.median(ratios) * math.exp(SPREAD_Z * spread), max(ratios))))
    if len(ratios) < FEW:  # (after the clamp: a 3 s job on a 1 h estimate is not 0.001 to shrink)
        stretched = math.exp(_log(stretched) * len(ratios) / FEW)
    return stretched


def _log(ratio: float) -> float:
    return math.log(max(ratio, 1e-9))


def _counted(run: tuple[float, float]) -> float | None:
    """The run's actual/estimate as `learned_ratio` counts it (None: not counted)."""
    est, actual = run
    return actual / est if est > 0 and actual >= 0 else None


class RatioLearner:
    """Per-tenant ratios learned from finished jobs as they finish (the newest `window` each)."""

    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self._runs: dict[str, deque[tuple[float, float]]] = {}
        self._kept: dict[str, tuple[list[float], list[float]] | None] = {}
        """Each tenant's counted ratios of its window, sorted, with their logs (None: no window, or a
        ratio that is not finite was seen: its window is read whole, as `learned_ratio` reads it)."""
        self._ratio: dict[str, float] = {}
        self.version = 0
        """Bumped whenever a ratio changes (cached projections are stale then)."""

    def observe(self, tenant: str, estimated_s: float, actual_s: float) -> None:
        """One of the tenant's jobs finished: it ran `actual_s` against `estimated_s`."""
        runs = self._runs.get(tenant)
        if runs is None:
            runs = self._runs[tenant] = deque(maxlen=self.window)
            self._kept[tenant] = ([], []) if self.window > 0 else None
        kept = self._kept[tenant]
        if kept is not None and len(runs) == runs.maxlen and (old := _counted(runs[0])) is not None:
            i = bisect.bisect_left(kept[0], old)  # it leaves the window
            del kept[0][i], kept[1][i]
        runs.append((estimated_s, actual_s))
        new = _counted((estimated_s, actual_s))
        if kept is not None and new is not None:
            if math.isfinite(new):
                i = bisect.bisect_right(kept[0], new)
                kept[0].insert(i, new)
                kept[1].insert(i, _log(new))
            else:  # inf or nan: medians over them depend on the order; read the window plainly
                kept = self._kept[tenant] = None
        # The same values `learned_ratio(runs)` counts, each log taken once: the same medians.
        value = learned_ratio(runs) if kept is None else _from_ratios(*kept)
        if value != self._ratio.get(tenant, 1.0):
            self.version += 1
        self._ratio[tenant] = value

    def ratio(self, tenant: str) -> float:
        return self._ratio.get(tenant, 1.0)

    def ratios(self) -> dict[str, float]:
        """Every tenant's ratio learned so far (tenants with no finished job are not listed)."""
        return dict(sorted(self._ratio.items()))
