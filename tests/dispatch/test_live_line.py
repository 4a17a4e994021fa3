"""The live line's incremental schedule gives what `projected_wait_s` gives over the whole line.

The dispatcher places each waiter once (`broker.dispatch.lines.Line`) instead of replaying the
line for every job; on random partitions and lines both must give the same projected start.
"""

from __future__ import annotations

import math
import random

import pytest

from broker.burst.projection import projected_wait_s
from broker.dispatch.lines import CommittedBursts, Line, PartitionView

NOW = 1_800_000_000.0


def test_incremental_line_matches_the_whole_line_projection() -> None:
    for seed in range(500):
        check(random.Random(seed))


def check(rng: random.Random) -> None:
    total = rng.choice([1, 4, 8, 16])
    ends = []
    busy = 0
    while busy < total and rng.random() < 0.8:
        units = rng.randint(1, total - busy)
        ends.append((NOW + rng.uniform(-600, 36_000), units))
        busy += units
    free = total - busy
    backend = [(rng.randint(1, total + 1), rng.uniform(60, 7200)) for _ in range(rng.randint(0, 3))]
    line = [(rng.randint(1, total + 2), rng.uniform(60, 20_000)) for _ in range(rng.randint(0, 40))]
    need = rng.randint(1, total + 1)
    view = PartitionView(accelerated=True, free=free, ends=list(ends), backend_queue=backend)
    state = Line.of(view, NOW, generation=0)
    cut = rng.randint(0, len(line))
    for units, runtime in line[:cut]:  # placed across two passes: the result must not care
        state.add(units, runtime)
    for units, runtime in line[cut:]:
        state.add(units, runtime)
    expected = projected_wait_s(free, ends, [*backend, *line], need, NOW)
    got = state.start(need) - NOW
    if math.isinf(expected):
        assert math.isinf(got)
    else:
        assert got == pytest.approx(expected, abs=1e-6)


def test_bursts_due_together_count_ahead_in_one_order_and_a_job_asked_about_goes_last() -> None:
    bursts = CommittedBursts()
    for job in ("j1", "j2", "j3"):
        bursts.put(job, "aws", NOW)
    bursts.put("early", "aws", NOW - 60)
    bursts.put("other-route", "aliyun", NOW)
    # Due at the same moment, each sees those listed before it: three launch rounds, not one.
    assert [bursts.ahead(NOW, job).get("aws", 0) for job in ("j1", "j2", "j3")] == [1, 2, 3]
    assert bursts.ahead(NOW - 60, "early") == {}
    assert bursts.ahead(NOW) == {"aws": 4, "aliyun": 1}  # a job not yet committed: behind them all
    bursts.put("j2", None, 0.0)  # decided again: no longer committed
    assert bursts.ahead(NOW, "j3")["aws"] == 2
