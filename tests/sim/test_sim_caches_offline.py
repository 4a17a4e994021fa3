"""The offline schedule's earliest start, every candidate checked in one numpy call, equals the
plain one-candidate-at-a-time search (issue 15, speed: same answers, not timings)."""

from __future__ import annotations

import bisect
import math
import random

from broker.sim.offline import MAX_CANDIDATES, _Partition


def _plain_earliest(
    p: _Partition, arrival: float, latest: float, runtime: float, demand: int
) -> float | None:
    """The search as it was: `fits` on each candidate in turn."""
    if demand > p.total:
        return None
    if p.fits(arrival, runtime, demand):
        return arrival
    i = bisect.bisect_right(p.ends, arrival)
    bounded = not math.isinf(latest)
    for n, t in enumerate(p.ends[i:]):
        if t > latest or (bounded and n >= MAX_CANDIDATES):
            return None
        if p.fits(t, runtime, demand):
            return t
    return None if bounded or not p.ends else max(arrival, p.ends[-1])


def test_earliest_starts_equal_the_plain_search_as_a_schedule_fills() -> None:
    rng = random.Random(15)
    fast, plain = _Partition(16, 50, 60.0), _Partition(16, 50, 60.0)  # small: both must grow
    answers = []
    for _ in range(3000):
        arrival = rng.uniform(0, 40_000)
        runtime = rng.choice([30.0, 600.0, rng.uniform(1, 20_000)])
        demand = rng.choice([1, 2, 4, 8, 16, 17])
        latest = rng.choice([arrival, arrival + rng.uniform(0, 7200), math.inf])
        got = fast.earliest(arrival, latest, runtime, demand)
        assert got == _plain_earliest(plain, arrival, latest, runtime, demand)
        answers.append(got)
        if got is not None:
            fast.take(got, runtime, demand)
            plain.take(got, runtime, demand)
    assert fast.ends == plain.ends
    assert len(fast.used) > 50  # the buckets grew past the start
    assert None in answers and any(a is not None and a not in (0.0,) for a in answers)
    # Starts at later ends, bounded and not, were found (not only at arrival).
    assert sum(1 for a in answers if a is not None and a in set(fast.ends)) > 50


def test_only_the_first_candidates_are_tried_when_the_latest_start_is_bounded() -> None:
    # Buckets 0..64 full, bucket 65 free: the first end that fits is the 65th candidate.
    for latest, want in ((1e6, None), (math.inf, 3900.0)):
        fast, plain = _Partition(2, 66, 60.0), _Partition(2, 66, 60.0)  # 66: a span ends at the last bucket
        for p in (fast, plain):
            for b in range(65):
                p.take(b * 60.0, 60.0, 2)
        assert fast.earliest(0.0, latest, 60.0, 1) == _plain_earliest(plain, 0.0, latest, 60.0, 1) == want
