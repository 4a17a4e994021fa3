"""The simulator's view of who waits where, for projected starts (`broker.burst.projection`).

Per on-prem partition: the jobs waiting for it (not those about to burst), keyed in dispatch
order (priority, then deadline). A job's projection takes the partition's running jobs'
expected ends and the jobs keyed ahead of it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping

from broker.burst.projection import projected_wait_s
from broker.sim.backends import Partition

Key = tuple[int, float, float, str]

NEVER_S = 1e9
"""A projected wait standing for "never" (finite, so it can be rounded and compared)."""


class ProjectedQueues:
    def __init__(self, parts: Mapping[str, Partition]) -> None:
        self.parts = parts
        self.waiting: dict[str, dict[int, tuple[Key, int, float]]] = {k: {} for k in parts}
        self.where: dict[int, str] = {}
        self._sorted: dict[str, list[tuple[Key, int, float]] | None] = dict.fromkeys(parts)

    def add(self, part: str, job: int, key: Key, units: int, runtime_s: float) -> None:
        self.remove(job)
        self.waiting[part][job] = (key, units, runtime_s)
        self.where[job] = part
        self._sorted[part] = None

    def remove(self, job: int) -> None:
        part = self.where.pop(job, None)
        if part is not None:
            del self.waiting[part][job]
            self._sorted[part] = None

    def _ordered(self, part: str) -> list[tuple[Key, int, float]]:
        got = self._sorted[part]
        if got is None:
            got = self._sorted[part] = sorted(self.waiting[part].values())
        return got

    def project(
        self, key: Key, units: int, now_s: float, give_up_after_s: float, *, accelerated: bool
    ) -> dict[str, float]:
        """Projected wait of a job with this dispatch key on every partition of its kind."""
        out: dict[str, float] = {}
        for name, part in self.parts.items():
            if part.accelerated != accelerated:
                continue
            if units > part.total:
                out[name] = math.inf
                continue
            queue = self._ordered(name)
            n = bisect.bisect_left(queue, (key,))
            ahead = ((u, r) for _, u, r in queue[:n])
            ends = part.ends
            # Jobs ending at this very instant may be off the heap before their units are back.
            missing = part.total - part.free - sum(u for _, u in ends)
            if missing > 0:
                ends = [*ends, (now_s, missing)]
            wait = projected_wait_s(part.free, ends, ahead, units, now_s, give_up_after_s=give_up_after_s)
            out[name] = min(wait, NEVER_S)
        return out
