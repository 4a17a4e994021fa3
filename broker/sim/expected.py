"""What the simulator's projections know of runtimes: estimates, corrected by the learned ratio.

As on the live side (`broker.dispatch.waits`), a running job's expected end is the start of
its run plus its runtime estimate times its tenant's learned actual/estimate ratio (less the
work a checkpoint already saved), and a waiting job is expected to run that long; the ratio
is learned from the jobs the simulation finishes (`broker.burst.runtimes`). Actual runtimes
drive only completions and bills, never a projection.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable, Iterable, Sequence
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
        self.learns = True
        """Whether finished jobs feed the learner (a baseline reads no projection: its runs need not)."""
        self.running: dict[str, dict[int, Running]] = {k: {} for k in parts}
        self._ends: dict[str, _Ends] = {}
        """Per partition, the expected ends under one learner version, kept as runs start and end."""

    def expected_left(self, job: SimJob, done_s: float) -> float:
        """Seconds the job is expected to run from now on (estimate x its tenant's ratio, less done)."""
        return max(0.0, estimate_of(job) * self.learner.ratio(job.tenant) - done_s)

    def started(self, part: str, job: SimJob, now_s: float, done_s: float) -> None:
        self.add(part, job.index, (now_s, estimate_of(job), done_s, job.demand, job.tenant))

    def add(self, part: str, key: int, run: Running) -> None:
        """A run holds units of the partition from now on."""
        self.running[part][key] = run
        got = self._ends.get(part)
        if got is not None and got.version == self.learner.version:
            got.put(key, _end(run, self.learner.ratio))
        else:
            self._ends.pop(part, None)

    def ended(self, part: str, job: SimJob, *, finished: bool = True) -> float | None:
        """The job's run on the partition ended: its units are free, and its runtime is learned if
        it `finished` (a run stopped early is no measure of the job, and it is learned when it
        finishes). Returns the end its estimate gave the backend (start + estimate - done), if it ran here."""
        run = self.running[part].pop(job.index, None)
        got = self._ends.get(part)
        if got is not None and got.version == self.learner.version:
            got.drop(job.index)
        else:
            self._ends.pop(part, None)
        if finished:
            self.learn(job)
        return None if run is None else run[0] + max(0.0, run[1] - run[2])

    def learn(self, job: SimJob) -> None:
        """The job ran to completion: its actual/estimate ratio feeds its tenant's learner."""
        if self.learns:
            self.learner.observe(job.tenant, estimate_of(job), job.runtime_s)

    def ends(self, part: str) -> list[tuple[float, int]]:
        """(expected end, units) of the partition's running jobs, soonest first (an end in the
        past means now)."""
        return self._kept(part).ordered

    def units(self, part: str) -> int:
        """Units the partition's running jobs hold (the sum over `ends`)."""
        return self._kept(part).units

    def _kept(self, part: str) -> _Ends:
        version = self.learner.version
        got = self._ends.get(part)
        if got is None or got.version != version:
            ratio = self.learner.ratio
            got = self._ends[part] = _Ends(version)
            for key, run in self.running[part].items():
                got.put(key, _end(run, ratio))
        return got


def _end(run: Running, ratio: Callable[[str], float]) -> tuple[float, int]:
    start, est, done, n, who = run
    return start + max(0.0, est * ratio(who) - done), n


class _Ends:
    """One partition's expected ends under one learner version: sorted, with their units summed
    (a start or an end moves one entry instead of recomputing every running job's end)."""

    __slots__ = ("by_key", "ordered", "units", "version")

    def __init__(self, version: int) -> None:
        self.version = version
        self.by_key: dict[int, tuple[float, int]] = {}
        self.ordered: list[tuple[float, int]] = []
        self.units = 0

    def put(self, key: int, end: tuple[float, int]) -> None:
        self.drop(key)
        self.by_key[key] = end
        bisect.insort(self.ordered, end)
        self.units += end[1]

    def drop(self, key: int) -> None:
        end = self.by_key.pop(key, None)
        if end is not None:
            del self.ordered[bisect.bisect_left(self.ordered, end)]
            self.units -= end[1]


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
