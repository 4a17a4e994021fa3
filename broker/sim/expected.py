"""What the simulator's projections know of runtimes: estimates, corrected by the learned ratio.

As on the live side (`broker.dispatch.waits`), a running job's expected end is the start of
its run plus its runtime estimate times its tenant's learned actual/estimate ratio (less the
work a checkpoint already saved), and a waiting job is expected to run that long; the ratio
is learned from the jobs the simulation finishes (`broker.burst.runtimes`). Actual runtimes
drive only completions and bills, never a projection.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from datetime import timedelta

from broker.burst.runtimes import RatioLearner
from broker.sim.jobs import SimJob

Running = tuple[float, float, float, int, str]
"""A running job: start, estimate, work already done (checkpointed), units, tenant."""


def estimate_of(job: SimJob) -> float:
    """The runtime estimate the job was submitted with, in seconds."""
    return job.spec.runtime_estimate.total_seconds()


class RunningEnds:
    """Per partition, the running jobs and their expected ends under the learned ratios."""

    def __init__(self, parts: Iterable[str], learner: RatioLearner | None = None) -> None:
        self.learner = learner or RatioLearner()
        self.running: dict[str, dict[int, Running]] = {k: {} for k in parts}
        self._ends: dict[str, tuple[int, list[tuple[float, int]]]] = {}

    def expected_left(self, job: SimJob, done_s: float) -> float:
        """Seconds the job is expected to run from now on (estimate x its tenant's ratio, less done)."""
        return max(0.0, estimate_of(job) * self.learner.ratio(job.tenant) - done_s)

    def started(self, part: str, job: SimJob, now_s: float, done_s: float) -> None:
        self.add(part, job.index, (now_s, estimate_of(job), done_s, job.demand, job.tenant))

    def add(self, part: str, key: int, run: Running) -> None:
        """A run holds units of the partition from now on."""
        self.running[part][key] = run
        self._ends.pop(part, None)

    def ended(self, part: str, job: SimJob) -> float | None:
        """The job finished on the partition: its units are free, its runtime is learned.
        Returns the end its estimate gave the backend (start + estimate - done), if it ran here."""
        run = self.running[part].pop(job.index, None)
        self._ends.pop(part, None)
        self.learn(job)
        return None if run is None else run[0] + max(0.0, run[1] - run[2])

    def learn(self, job: SimJob) -> None:
        """The job ran to completion: its actual/estimate ratio feeds its tenant's learner."""
        self.learner.observe(job.tenant, estimate_of(job), job.runtime_s)

    def ends(self, part: str) -> list[tuple[float, int]]:
        """(expected end, units) of the partition's running jobs (an end in the past means now)."""
        version = self.learner.version
        got = self._ends.get(part)
        if got is None or got[0] != version:
            ratio = self.learner.ratio
            rows = self.running[part].values()
            ends = [(start + max(0.0, est * ratio(who) - done), n) for start, est, done, n, who in rows]
            got = self._ends[part] = (version, ends)
        return got[1]


def clairvoyant(jobs: Sequence[SimJob]) -> list[SimJob]:
    """The jobs with their actual runtimes as estimates: what the references (LP bound, offline
    schedule, baselines) decide on, so they stay clairvoyant whatever users estimate."""
    out = []
    for j in jobs:
        if estimate_of(j) != j.runtime_s:
            spec = j.spec.model_copy(update={"runtime_estimate": timedelta(seconds=j.runtime_s)})
            j = dataclasses.replace(j, spec=spec)
        out.append(j)
    return out
