"""Which tenant a trace job belongs to: its own, its group's, or one drawn by the scenario's weights."""

from __future__ import annotations

import random
from bisect import bisect_right

from broker.policy import Policy
from broker.sim.scenario import Scenario
from broker.sim.traces import TraceJob


class TenantDraw:
    """Tenants for a trace's jobs, in trace order, from the scenario's seed.

    A job without a tenant or a group draws from one stream; a group (the v2026 job list's
    `organization`) draws once, at its first job, from a stream of its own, so a trace's groups
    do not move the tenants its other jobs get."""

    def __init__(self, policy: Policy, scenario: Scenario) -> None:
        self.known = [t.id for t in policy.tenants] or ["default"]
        weights = {t: w for t, w in scenario.tenants.items() if w > 0} or dict.fromkeys(self.known, 1.0)
        self.names = list(weights)
        self.cum: list[float] = []
        total = 0.0
        for name in self.names:
            total += weights[name]
            self.cum.append(total)
        self.rng = random.Random(f"{scenario.seed}:tenants")
        self.group_rng = random.Random(f"{scenario.seed}:groups")
        self.groups: dict[str, str] = {}

    def tenant(self, job: TraceJob) -> str:
        """The job's tenant (draws are taken in the order jobs are asked about)."""
        if job.tenant:
            return job.tenant
        if job.group is None:
            return self._draw(self.rng)
        got = self.groups.get(job.group)
        if got is None:
            got = self.groups[job.group] = self._draw(self.group_rng)
        return got

    def _draw(self, rng: random.Random) -> str:
        return self.names[min(len(self.names) - 1, bisect_right(self.cum, rng.random() * self.cum[-1]))]
