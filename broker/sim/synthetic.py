"""A synthetic LLM-heavy workload: multi-GPU jobs arriving with diurnal peaks.

Arrivals are a non-homogeneous Poisson process (thinning) whose rate follows the day:
`rate(t) = base x (1 + diurnal_amplitude x cos(2 pi (hour(t) - peak_hour) / 24))`, with
`base` = `jobs_per_day` on average. Each job draws a kind (fine-tune,
pre-train slice, inference/eval batch, CPU preprocessing) with its own accelerator count
mix and log-normal run time. Everything comes from one seed.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from broker.sim.traces import TraceJob


@dataclass(frozen=True)
class JobKind:
    name: str
    weight: float
    """Share of jobs of this kind."""
    counts: tuple[tuple[int, float], ...]
    """(accelerators, weight): the accelerator-count mix (0 = CPU-only)."""
    median_runtime_s: float
    sigma: float
    """Log-normal shape of the run time."""
    cpus_per_gpu: float = 8.0
    memory_gb_per_gpu: float = 64.0
    priorities: tuple[tuple[str, float], ...] = (("normal", 1.0),)


@dataclass(frozen=True)
class SyntheticParams:
    """Parameters of the generator (all documented defaults describe an LLM-heavy platform)."""

    jobs: int = 10_000
    jobs_per_day: float = 550.0
    """Mean arrival rate; with the default mix (~18 GPU-hours a job) 550/day loads 640 GPUs to ~65 %,
    with peaks above capacity."""
    diurnal_amplitude: float = 0.6
    """0 = flat; 0.6 = the peak rate is 4x the trough."""
    peak_hour: float = 15.0
    """Hour of the day (Beijing) with the most arrivals."""
    max_runtime_s: float = 3 * 86400.0
    kinds: tuple[JobKind, ...] = field(
        default_factory=lambda: (
            JobKind(
                "finetune",
                0.35,
                ((1, 0.2), (2, 0.2), (4, 0.3), (8, 0.3)),
                3 * 3600,
                1.0,
                priorities=(("normal", 0.8), ("high", 0.1), ("low", 0.1)),
            ),
            JobKind(
                "pretrain-slice", 0.1, ((8, 1.0),), 10 * 3600, 0.8, priorities=(("low", 0.6), ("normal", 0.4))
            ),
            JobKind(
                "eval-batch",
                0.4,
                ((1, 0.6), (2, 0.25), (4, 0.15)),
                1200,
                1.2,
                priorities=(("normal", 0.7), ("high", 0.2), ("low", 0.1)),
            ),
            JobKind("preprocess", 0.15, ((0, 1.0),), 1800, 1.0, cpus_per_gpu=16, memory_gb_per_gpu=64),
        )
    )


def _pick(
    rng: random.Random,
    choices: tuple[tuple[int, float], ...] | tuple[tuple[str, float], ...],
    total: float | None = None,
) -> object:
    """A value drawn by weight; `total`: the weights' sum (`_total`), when the caller keeps it."""
    x = rng.random() * (_total(choices) if total is None else total)
    for value, w in choices:
        x -= w
        if x < 0:
            return value
    return choices[-1][0]


def _total(choices: tuple[tuple[int, float], ...] | tuple[tuple[str, float], ...]) -> float:
    return sum(w for _, w in choices)


def generate(params: SyntheticParams, seed: int) -> list[TraceJob]:
    """`params.jobs` jobs, sorted by submit time."""
    rng = random.Random(f"{seed}:synthetic")
    span = params.jobs / params.jobs_per_day * 86400.0
    base = params.jobs / span
    peak = base * (1 + params.diurnal_amplitude)
    kinds_total = sum(k.weight for k in params.kinds)
    totals = {id(k): (_total(k.counts), _total(k.priorities)) for k in params.kinds}  # the same sums, once
    out: list[TraceJob] = []
    t = 0.0
    while len(out) < params.jobs:
        t += rng.expovariate(peak)
        hour = (t / 3600.0) % 24
        rate = base * (1 + params.diurnal_amplitude * math.cos(2 * math.pi * (hour - params.peak_hour) / 24))
        if rng.random() * peak > rate:
            continue
        x = rng.random() * kinds_total
        kind = params.kinds[-1]
        for k in params.kinds:
            x -= k.weight
            if x < 0:
                kind = k
                break
        count_total, priority_total = totals[id(kind)]
        count = int(_pick(rng, kind.counts, count_total))  # type: ignore[call-overload]
        runtime = min(
            params.max_runtime_s, max(60.0, kind.median_runtime_s * math.exp(rng.gauss(0.0, kind.sigma)))
        )
        per = max(1, count)
        out.append(
            TraceJob(
                name=f"syn-{len(out)}",
                submit_s=round(t, 3),
                runtime_s=round(runtime),
                count=count,
                cpus=kind.cpus_per_gpu * per,
                memory_gb=kind.memory_gb_per_gpu * per,
                priority=str(_pick(rng, kind.priorities, priority_total)),
            )
        )
    return out
