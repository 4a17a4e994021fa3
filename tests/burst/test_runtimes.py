"""The one learner of actual/estimate runtime ratios (live and simulated): median, the spread of
the tenant's errors job by job, window, clamp."""

from __future__ import annotations

import math

import pytest

from broker.burst.runtimes import FEW, HIGH, LOW, SPREAD_Z, RatioLearner, learned_ratio
from broker.dispatch import runtimes as live


def test_the_ratio_is_the_median_so_one_hung_job_does_not_move_it() -> None:
    runs = [(3600.0, 1800.0)] * 4 + [(3600.0, 36000.0)]
    assert learned_ratio(runs) == pytest.approx(0.5)  # neither the median nor the spread moves
    assert learned_ratio([(100.0, 125.0)] * 5) == pytest.approx(1.25)  # all off by one factor: that factor


def test_estimates_that_scatter_stretch_the_ratio_past_the_median() -> None:
    # Median 1, most jobs a quarter off either way: the projection plans on a later end, by
    # SPREAD_Z robust standard deviations of the log ratio (1.4826 x the median absolute deviation).
    quarter = [(100.0, 80.0), (100.0, 125.0)] * 2 + [(100.0, 100.0), (100.0, 300.0), (100.0, 100 / 3)]
    assert SPREAD_Z > 0
    assert learned_ratio(quarter) == pytest.approx(math.exp(SPREAD_Z * 1.4826 * math.log(1.25)), rel=1e-3)
    half = [(100.0, 50.0), (100.0, 200.0)] * 2 + [(100.0, 100.0), (100.0, 1000.0), (100.0, 10.0)]
    # Each job half or twice off: the stretch is 2 to the 1.4826·z, larger than a quarter's, under the clamp.
    assert learned_ratio(half) == pytest.approx(2.0 ** (SPREAD_Z * 1.4826), rel=1e-3)
    assert learned_ratio(quarter) < learned_ratio(half) < HIGH
    assert learned_ratio([(100.0, 100.0), (100.0, 300.0)] * 3) > 2.0  # above the median of an even split


def test_the_stretch_never_goes_past_the_longest_run_seen() -> None:
    """Held-out review: a tenant's no-op runs (5 s of a 1 h estimate) beside full ones (0.74 of it)
    made a spread so wide that one more early finish raised the ratio 0.60 -> 1.09, above every
    run; with half and half the ratio swung between the clamps (0.25, 4) job by job."""
    full, early = (3600.0, 0.74 * 3600), (3600.0, 5.0)
    for n_early in (20, 24, 25, 26, 30):
        runs = [early] * n_early + [full] * (50 - n_early)
        assert learned_ratio(runs) <= 0.74 + 1e-9, n_early
    scatter = [(100.0, 80.0), (100.0, 125.0), (100.0, 80.0), (100.0, 125.0), (100.0, 100.0)]
    assert learned_ratio(scatter) == pytest.approx(1.25)  # 1.25 ** 1.48 would pass every run


def test_no_history_or_no_usable_estimate_gives_one() -> None:
    assert learned_ratio([]) == 1.0
    assert learned_ratio([(0.0, 60.0), (-5.0, 60.0)]) == 1.0
    assert RatioLearner().ratio("nobody") == 1.0


def test_the_ratio_is_clamped() -> None:
    assert (LOW, HIGH) == (0.25, 4.0)
    assert learned_ratio([(3600.0, 36000.0)] * FEW) == HIGH
    assert learned_ratio([(3600.0, 60.0)] * FEW) == LOW


def test_a_tenants_first_few_jobs_move_the_ratio_only_part_of_the_way() -> None:
    """Held-out review: one 2 s CPU job against a 60 s estimate clamped the tenant's ratio to 0.25,
    and its 20-minute GPU jobs were projected to end in 5 min (they ran 15)."""
    assert FEW == 5
    one = learned_ratio([(60.0, 2.0)])
    assert one == pytest.approx(math.exp(math.log(LOW) / FEW)) and one > 0.75
    ratios = [learned_ratio([(60.0, 2.0)] * n) for n in range(1, FEW + 1)]
    assert ratios == sorted(ratios, reverse=True) and ratios[-1] == LOW  # the full rule from FEW on
    # Self-review: a 3 s smoke test on a 1 h estimate (0.0008) was shrunk from below the clamp.
    assert learned_ratio([(3600.0, 3.0)]) == pytest.approx(LOW ** (1 / FEW))


def test_the_learner_keeps_each_tenants_newest_window() -> None:
    learner = RatioLearner(window=FEW)
    for _ in range(8):
        learner.observe("a", 1000.0, 4000.0)  # old history: 4x
    before = learner.version
    for _ in range(FEW):
        learner.observe("a", 1000.0, 500.0)  # the newest window: 0.5x
    assert learner.ratio("a") == pytest.approx(0.5)
    assert learner.version > before
    assert learner.ratio("b") == 1.0
    learner.observe("b", 1000.0, 2000.0)
    assert learner.ratio("b") == pytest.approx(2.0 ** (1 / FEW)) and learner.ratio("a") == pytest.approx(0.5)
    for _ in range(FEW - 1):
        learner.observe("b", 1000.0, 2000.0)
    assert learner.ratio("b") == pytest.approx(2.0) == learned_ratio([(1e3, 2e3)] * FEW)


def test_live_and_simulated_sides_share_one_rule() -> None:
    assert live.learned_ratio is learned_ratio
    assert live.LOW == LOW and live.HIGH == HIGH
    assert live.LearnedRatios().window == RatioLearner().window
