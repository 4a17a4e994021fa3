"""The reclaim budget's bucket: it paces waste to its share over the long run, never forever."""

from __future__ import annotations

import random

from broker.fairshare.budget import Bucket

CAPACITY, RATE = 240.0, 0.4  # 10% of 4 GPUs over 10 min: 240 accelerator-seconds, 0.4 per second


def test_a_full_bucket_lets_any_loss_go_into_debt_and_the_next_waits_until_it_is_repaid() -> None:
    bucket = Bucket.full(CAPACITY, RATE, at=0.0)
    assert bucket.allows(3_600.0, 0.0)  # an hour on one GPU: more than the bucket ever holds
    bucket = bucket.charge(3_600.0, 0.0)
    assert bucket.level_at(0.0) == -3_360.0
    assert not bucket.allows(10.0, 100.0)
    assert bucket.wait_s(10.0, 100.0) == (10.0 + 3_360.0) / RATE - 100.0
    assert bucket.wait_s(10.0, 100.0, growth=1.0) == (CAPACITY + 3_360.0) / RATE - 100.0  # waits to be full
    assert bucket.allows(10.0, (10.0 + 3_360.0) / RATE)
    assert bucket.level_at(1e9) == CAPACITY  # never beyond its capacity


def test_over_a_long_run_waste_stays_within_the_share_and_every_owner_waits_a_bounded_time() -> None:
    rng = random.Random(7)
    bucket = Bucket.full(CAPACITY, RATE, at=0.0)
    charged, largest, asked_at, longest_wait = 0.0, 0.0, 0.0, 0.0
    for second in range(1, 200_000):
        t = float(second)
        loss = rng.choice([5.0, 60.0, 600.0, 3_600.0, 20_000.0]) * rng.random()
        if bucket.allows(loss, t):  # an owner asks every second; borrowed work is always there
            bucket = bucket.charge(loss, t)
            charged += loss
            largest = max(largest, loss)
            longest_wait = max(longest_wait, t - asked_at)
            asked_at = t
        # Over [0, t]: at most the refill plus what a full bucket (or one loss from full) lets go.
        assert charged <= RATE * t + max(CAPACITY, largest) + 1e-6
    assert charged > 0.9 * RATE * 200_000  # the budget is used, not hoarded
    assert longest_wait <= max(CAPACITY, largest) / RATE + 1.0


def test_a_reloaded_policy_resizes_the_bucket_without_losing_its_debt() -> None:
    bucket = Bucket.full(CAPACITY, RATE, at=0.0).charge(400.0, 0.0).resized(120.0, 0.2)
    assert bucket.level_at(0.0) == -160.0
    assert bucket.level_at(10_000.0) == 120.0
