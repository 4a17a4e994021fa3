"""The simulator's incremental fair-share book gives the live book's numbers."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import pytest

from broker.fairshare.book import FairShareBook, Holding
from broker.fairshare.usage import Demand
from broker.policy import load_policy
from broker.sim.fairbook import IncrementalBook, close
from broker.sim.jobs import EPOCH

POLICY = Path(__file__).resolve().parents[2] / "configs/policy-sim.yaml"


@pytest.mark.parametrize("half_life_s", [0.0, 3600.0, 7 * 86400.0])
def test_incremental_book_matches_the_live_book(half_life_s: float) -> None:
    policy = load_policy(POLICY)
    rng = random.Random(7)
    live, fast = FairShareBook(half_life_s), IncrementalBook(half_life_s)
    running: list[str] = []
    t = 0.0
    for n in range(600):
        t += rng.expovariate(1 / 900)
        now = EPOCH + timedelta(seconds=t)
        if running and rng.random() < 0.45:
            ended = running.pop(rng.randrange(len(running)))
            live.ended(ended, now)
            fast.ended(ended, now)
        else:
            gpus = rng.choice([1, 2, 4, 8])
            h = Holding(
                rng.choice("abcd"), rng.choice(["p/x", "p/y"]), Demand(gpus, 8.0 * gpus, 64.0), gpus, now
            )
            live.started(str(n), h)
            fast.started(str(n), h)
            running.append(str(n))
        if n % 25 == 0:
            a, b = live.tenant_states(policy, now, {"e"}), fast.tenant_states(policy, now, {"e"})
            assert a.keys() == b.keys()
            for tenant in a:
                assert close(a[tenant].usage, b[tenant].usage), (tenant, a[tenant], b[tenant])
                assert a[tenant].in_use == b[tenant].in_use
                assert a[tenant].share == b[tenant].share
