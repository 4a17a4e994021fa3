"""The LP bound's bucket edges found by bisection equal the edges of the plain scan (issue 15,
speed): the same floats, so the same LP and the same bound."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from broker.sim.lower_bound import _edges, _merge, _points


@dataclass
class _Job:
    arrival_s: float
    max_wait_s: float
    runtime_s: float


def _plain_edges(jobs: list[_Job], max_buckets: int) -> list[float]:
    """The edges as first written: a scan over every point for each gap tried."""
    pts = _points(jobs)  # the same points; the merge is what differs

    def merge(gap: float) -> list[float]:
        out = [float(pts[0])]
        for x in pts[1:]:
            if x - out[-1] >= gap:
                out.append(float(x))
        if out[-1] < pts[-1]:
            out.append(float(pts[-1]))
        return out

    lo, hi = 0.0, float(pts[-1])
    edges = merge(lo)
    if len(edges) <= max_buckets + 1:
        return edges
    for _ in range(40):
        mid = (lo + hi) / 2
        if len(merge(mid)) > max_buckets + 1:
            lo = mid
        else:
            hi = mid
    return merge(hi)


def test_bucket_edges_by_bisection_equal_the_plain_scan() -> None:
    rng = random.Random(3)
    merged = 0
    for _ in range(60):
        n = rng.randint(1, 400)
        jobs = [
            _Job(
                rng.choice([0.0, 0.1 * rng.randrange(10**7), rng.uniform(0, 1e6)]),
                rng.choice([0.0, 1800.0, rng.uniform(0, 7200)]),
                rng.choice([60.0, rng.uniform(1, 1e5)]),
            )
            for _ in range(n)
        ]
        buckets = rng.choice([1, 5, 100, 2000])
        got = _edges(jobs, buckets)  # type: ignore[arg-type]
        assert got == _plain_edges(jobs, buckets)
        merged += len(got) < 4 * n
    assert merged > 20  # the bisection on the gap ran (more points than buckets)


def _plain_merge(xs: list[float], gap: float) -> list[float]:
    out = [xs[0]]
    for x in xs[1:]:
        if x - out[-1] >= gap:
            out.append(x)
    if out[-1] < xs[-1]:
        out.append(xs[-1])
    return out


def test_merge_keeps_the_points_of_the_plain_scan_where_last_plus_gap_rounds() -> None:
    # x >= last + gap and x - last >= gap can disagree in the last bit either way near the
    # boundary (x below last + gap passing, x above it failing): points placed there, and their
    # neighbours one ulp away, with gaps far smaller than the points and as large as them.
    rng = random.Random(7)
    below = above = 0
    for n in range(3000):
        last = rng.uniform(0, 1e6)
        gap = rng.uniform(0, 1e4) if n % 2 else rng.uniform(0, 1e6)
        edge = last + gap
        down, up = math.nextafter(edge, -math.inf), math.nextafter(edge, math.inf)
        below += down - last >= gap
        above += not edge - last >= gap
        later = (up + rng.uniform(0, 3e6) for _ in range(rng.randint(0, 20)))
        xs = sorted({last, down, edge, up, *later})  # `last` is kept (the first point)
        assert _merge(xs, gap) == _plain_merge(xs, gap)
    assert below > 5 and above > 100
