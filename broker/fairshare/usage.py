"""On-prem usage per tenant: what runs now plus past use decaying over a half-life. Pure (no I/O, no clock).

A tenant's usage of resource r is `(allocated_r + history_r) / 2`, where `history_r` is the
decayed average of what it held in the past:

    history_r(t) = ln2/H · ∫ held_r(τ) · 2^(-(t-τ)/H) dτ

so a tenant that has held `a` for a long time has history `a` and usage `a`; one that just
started has usage `a/2`, and a tenant that stopped fades to half within H. With H = 0 only
what runs now counts (usage = allocated), as in Armada or Kueue.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Demand:
    """A resource vector: accelerators, CPU cores and memory (GB)."""

    accelerators: float = 0.0
    cpus: float = 0.0
    memory_gb: float = 0.0

    def __add__(self, other: Demand) -> Demand:
        return Demand(
            self.accelerators + other.accelerators, self.cpus + other.cpus, self.memory_gb + other.memory_gb
        )

    def scaled(self, k: float) -> Demand:
        return Demand(self.accelerators * k, self.cpus * k, self.memory_gb * k)

    def shares(self, capacity: Demand) -> tuple[float, float, float]:
        """Fractions of the capacity (0 where the capacity has none of a resource)."""
        return (
            self.accelerators / capacity.accelerators if capacity.accelerators > 0 else 0.0,
            self.cpus / capacity.cpus if capacity.cpus > 0 else 0.0,
            self.memory_gb / capacity.memory_gb if capacity.memory_gb > 0 else 0.0,
        )


ZERO = Demand()


@dataclass(frozen=True, slots=True)
class Interval:
    """Resources a tenant held on-prem from `start` until `end` (None: still running)."""

    tenant: str
    demand: Demand
    start: datetime
    end: datetime | None = None


def _integral(demand: Demand, start: float, end: float, at: float, half_life_s: float) -> Demand:
    """∫_start^end demand · 2^(-(at-τ)/H) dτ, in resource-seconds as of `at` (at >= end)."""
    if end <= start:
        return ZERO
    k = half_life_s / math.log(2)
    factor = k * (2 ** (-(at - end) / half_life_s) - 2 ** (-(at - start) / half_life_s))
    return demand.scaled(factor)


class UsageLedger:
    """Decayed usage of finished on-prem work per tenant, kept as one running sum each.

    Adding a finished interval or reading the history is O(1) per tenant, whatever the
    number of jobs; only the times passed in are used (the caller owns the clock).
    """

    def __init__(self, half_life_s: float) -> None:
        self.half_life_s = max(0.0, half_life_s)
        self._sums: dict[str, Demand] = {}
        self._at: float | None = None
        self.changes = 0
        """Counts the intervals added (or states restored): a saver compares it with its last."""

    def state(self) -> tuple[float, dict[str, Demand]] | None:
        """(time in epoch seconds, decayed resource-seconds per tenant) to keep; None when empty."""
        if self._at is None or not self._sums:
            return None
        return self._at, dict(self._sums)

    def restore(self, at_s: float, sums: Mapping[str, Demand]) -> None:
        """Take back a kept state (after a restart): what was added since is kept too."""
        if self.half_life_s <= 0:
            return
        mine = self._sums
        self._sums, self._at = dict(sums), at_s
        for tenant, part in mine.items():  # intervals added before the restore (rare)
            self._sums[tenant] = self._sums.get(tenant, ZERO) + part
        self.changes += 1

    def with_half_life(self, half_life_s: float) -> UsageLedger:
        """This ledger under another half-life: each tenant's history as of the last booking is
        kept (its sums scaled by the ratio of the half-lives) and fades by the new one from then
        on; a change to or from 0 keeps nothing (with H = 0 no history counts)."""
        new = UsageLedger(half_life_s)
        if self.half_life_s > 0 and new.half_life_s > 0 and self._at is not None:
            k = new.half_life_s / self.half_life_s
            new.restore(self._at, {t: d.scaled(k) for t, d in self._sums.items()})
        return new

    def _advance(self, t: float) -> None:
        if self._at is None:
            self._at = t
            return
        if t <= self._at:
            return
        f = 2 ** (-(t - self._at) / self.half_life_s) if self.half_life_s > 0 else 0.0
        self._sums = {k: v.scaled(f) for k, v in self._sums.items()}
        self._at = t

    def add(self, interval: Interval) -> None:
        """Book a finished interval (running ones are passed to `history` instead)."""
        if self.half_life_s <= 0 or interval.end is None:
            return
        start, end = interval.start.timestamp(), interval.end.timestamp()
        self._advance(end)
        assert self._at is not None
        part = _integral(interval.demand, start, end, self._at, self.half_life_s)
        self._sums[interval.tenant] = self._sums.get(interval.tenant, ZERO) + part
        self.changes += 1

    def history(self, now: datetime, running: Iterable[Interval] = ()) -> dict[str, Demand]:
        """Per tenant, the decayed average of what it held (finished work plus running work so far)."""
        if self.half_life_s <= 0:
            return {}
        t = now.timestamp()
        self._advance(t)
        at = self._at if self._at is not None else t
        decay_to_now = 2 ** (-(t - at) / self.half_life_s) if t > at else 1.0
        norm = math.log(2) / self.half_life_s
        out = {k: v.scaled(decay_to_now * norm) for k, v in self._sums.items()}
        for iv in running:
            part = _integral(iv.demand, iv.start.timestamp(), t, t, self.half_life_s).scaled(norm)
            out[iv.tenant] = out.get(iv.tenant, ZERO) + part
        return out


def usage(
    allocated: Mapping[str, Demand], history: Mapping[str, Demand], half_life_s: float
) -> dict[str, Demand]:
    """Per tenant, the usage fair share compares: (allocated + history) / 2, or allocated alone with H = 0."""
    if half_life_s <= 0:
        return dict(allocated)
    return {t: (allocated.get(t, ZERO) + history.get(t, ZERO)).scaled(0.5) for t in {*allocated, *history}}


def charge_factor(half_life_s: float) -> float:
    """How much of a job's demand its tenant's usage grows by when the job starts now."""
    return 0.5 if half_life_s > 0 else 1.0
