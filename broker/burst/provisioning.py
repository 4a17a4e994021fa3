"""Each cloud route's provisioning time as observed: the p95 of its newest launches. Pure.

A late job bursts at its last responsible moment, its deadline minus the route's provisioning
p95 (`broker.burst.leads`). The policy states that p95 per route (`burst.sites.*.provisioning_p95`,
5 min when unset), but a route's instances may come up slower than stated: every burst timed on
the stated figure then starts its job late. The broker times each launch (from the attempt's
creation to its job running) and a route's lead is the larger of the policy's figure and the
p95 of its newest `WINDOW` launches, once it has seen `MIN_LAUNCHES`: the policy's figure is a
floor an operator sets, never lowered by a fast run of launches.
"""

from __future__ import annotations

import bisect
import math
from collections import deque

WINDOW = 100
"""Launches per route the p95 is taken over (the newest: routes change)."""
MIN_LAUNCHES = 10
"""Launches a route needs before its observed p95 counts (fewer say little about a tail)."""


class LaunchTimes:
    """One route's newest launch durations, in seconds, with their p95."""

    __slots__ = ("_order", "_sorted", "window")

    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self._order: deque[float] = deque()
        self._sorted: list[float] = []

    def observe(self, seconds: float) -> None:
        """A launch took `seconds` from the attempt's creation to its job running."""
        if not math.isfinite(seconds) or seconds < 0:
            return
        self._order.append(seconds)
        bisect.insort(self._sorted, seconds)
        if len(self._order) > self.window:
            old = self._order.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]

    def __len__(self) -> int:
        return len(self._order)

    def p95_s(self) -> float | None:
        """The nearest-rank 95th percentile, or None before `MIN_LAUNCHES` launches."""
        n = len(self._sorted)
        if n < MIN_LAUNCHES:
            return None
        return self._sorted[math.ceil(0.95 * n) - 1]


class ProvisioningTimes:
    """Per cloud site, its `LaunchTimes`."""

    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self._by_site: dict[str, LaunchTimes] = {}

    def observe(self, site: str, seconds: float) -> None:
        got = self._by_site.get(site)
        if got is None:
            got = self._by_site[site] = LaunchTimes(self.window)
        got.observe(seconds)

    def learned(self) -> dict[str, float]:
        """Site -> observed p95, for the sites with enough launches."""
        out = {}
        for site, times in self._by_site.items():
            p95 = times.p95_s()
            if p95 is not None:
                out[site] = p95
        return out
