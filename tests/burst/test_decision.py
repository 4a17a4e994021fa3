"""The pure run / wait / burst decision, table-driven, with an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker.burst import BurstInputs, RouteState, TenantMoney, decide, effective_max_wait
from broker.decision import Action
from broker.model import JobSpec, Offer, SiteId, TenantId
from broker.policy import Policy, load_policy
from broker.policy.offers import static_offers
from tests.burst.conftest import POLICY, write_policy

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def job(
    accels: tuple[str, ...] = ("A800", "A10"),
    *,
    runtime: str = "1h",
    max_wait: str | None = "10m",
    spot: str = "allowed",
    deadline: datetime | None = None,
    count: int = 1,
) -> JobSpec:
    data: dict[str, object] = {
        "name": "j",
        "command": ["true"],
        "runtime_estimate": runtime,
        "spot": spot,
        "resources": {"accelerators": {"count": count, "any_of": list(accels)}},
    }
    if max_wait is not None:
        data["max_wait"] = max_wait
    if deadline is not None:
        data["deadline"] = deadline
    return JobSpec.model_validate(data)


def offers(policy: Policy, *, free: int, wait_s: float) -> list[Offer]:
    out = []
    for o in static_offers(policy, read_at=NOW):
        if o.site == "onprem":
            o = o.model_copy(update={"free": free, "expected_wait_s": wait_s})
        out.append(o)
    return out


def inputs(**kw: object) -> BurstInputs:
    base: dict[str, object] = {"now": NOW, "queued_since": NOW}
    base.update(kw)
    return BurstInputs(**base)  # type: ignore[arg-type]


def test_free_onprem_runs_there(policy: Policy) -> None:
    d = decide(job(), TenantId("lab"), offers(policy, free=8, wait_s=0), policy, inputs())
    assert d.action == Action.RUN and d.offer is not None and d.offer.site == "onprem" and not d.burst


def test_wait_within_max_wait_stays_onprem(policy: Policy) -> None:
    d = decide(job(max_wait="30m"), TenantId("lab"), offers(policy, free=0, wait_s=600), policy, inputs())
    assert d.action == Action.WAIT and d.offer is not None and d.offer.site == "onprem"
    assert d.facts.onprem_expected_wait_s == 600


def test_long_wait_bursts_to_cheapest_allowed_cloud(policy: Policy) -> None:
    d = decide(job(max_wait="5m"), TenantId("lab"), offers(policy, free=0, wait_s=3 * 3600), policy, inputs())
    assert d.action == Action.RUN and d.burst
    assert d.offer is not None and d.offer.site == "ali-bj"
    assert (d.facts.cloud_total_cost or 0) < (d.facts.onprem_total_cost or 0)
    assert "burst" in d.reasons[0]


def test_waiting_is_cheaper_for_a_short_job_whose_only_cloud_is_expensive(policy: Policy) -> None:
    # Only an 8 x A100 instance could take it: 230 CNY/h for 10 minutes vs a few minutes late.
    spec = job(("A800", "A100"), runtime="10m", max_wait="5m")
    d = decide(spec, TenantId("lab"), offers(policy, free=0, wait_s=8 * 60), policy, inputs())
    assert d.action == Action.WAIT
    assert "waiting is cheaper" in d.reasons[0]
    # The same wait with a cheap cloud option bursts.
    d2 = decide(
        job(("A800", "A10"), runtime="10m", max_wait="5m"),
        TenantId("lab"),
        offers(policy, free=0, wait_s=8 * 60),
        policy,
        inputs(),
    )
    assert d2.action == Action.RUN and d2.burst


def test_hysteresis_delays_a_burst_until_the_condition_has_held(policy: Policy) -> None:
    spec = job(max_wait="2h")
    waited = NOW - timedelta(minutes=5)
    first = decide(
        spec, TenantId("lab"), offers(policy, free=0, wait_s=6 * 3600), policy, inputs(queued_since=waited)
    )
    assert first.action == Action.WAIT and "pending" in first.reasons[0]
    since = first.facts.burst_pending_since
    assert since is not None
    later = decide(
        spec,
        TenantId("lab"),
        offers(policy, free=0, wait_s=6 * 3600),
        policy,
        inputs(now=NOW + timedelta(minutes=11), queued_since=waited, burst_pending_since=since),
    )
    assert later.action == Action.RUN and later.burst


def test_budget_left_too_small_means_wait_with_the_reason(policy: Policy) -> None:
    spec = job(max_wait="1m", runtime="4h", spot="never")  # 55.6 CNY on demand at ali-bj
    d = decide(
        spec,
        TenantId("poor"),
        offers(policy, free=0, wait_s=5 * 3600),
        policy,
        inputs(money=TenantMoney(budget_left=20.0)),
    )
    assert d.action == Action.WAIT
    assert any("budget" in r for r in d.reasons)


def test_an_all_sites_voucher_scores_cloud_offers_only(tmp_path: Path) -> None:
    """A voucher without `sites` pays for every cloud site, never for on-prem work (found by a
    held-out review of issue 6): on-prem offers get no `voucher` term, in the score as in explain."""
    all_sites = "{id: v1, balance: 1000, discount: 0.5}"
    text = POLICY.replace("{id: v1, balance: 100, discount: 0.5, sites: [ali-bj]}", all_sites)
    policy = load_policy(write_policy(tmp_path, text))
    d = decide(job(("A800", "A10"), runtime="4h", max_wait="5h"), TenantId("vouchered"),
               offers(policy, free=8, wait_s=0), policy, inputs(money=TenantMoney()))  # fmt: skip
    onprem = [s for s in d.explanation.offers if s.offer.site == "onprem"]
    cloud = [s for s in d.explanation.offers if s.offer.site == "ali-bj"]
    assert onprem and all(s.terms.get("voucher", 0.0) == 0.0 for s in onprem), [s.terms for s in onprem]
    assert cloud and all(s.terms["voucher"] < 0 for s in cloud), [s.terms for s in cloud]

def test_voucher_pays_first_so_a_small_budget_still_bursts(policy: Policy) -> None:
    spec = job(max_wait="1m", runtime="1h", spot="never")  # 13.9 CNY, half paid by the voucher
    d = decide(
        spec,
        TenantId("vouchered"),
        offers(policy, free=0, wait_s=5 * 3600),
        policy,
        inputs(money=TenantMoney(budget_left=7.0, voucher_balances={"v1": 100.0})),
    )
    assert d.action == Action.RUN and d.burst
    assert d.facts.voucher == pytest.approx(6.95) and d.facts.cash == pytest.approx(6.95)


def test_per_route_provisioning_limit_and_failure_throttle(policy: Policy) -> None:
    spec = job(("A800", "A10"), max_wait="1m")
    busy = {SiteId("ali-bj"): RouteState(provisioning=2)}
    d = decide(spec, TenantId("lab"), offers(policy, free=0, wait_s=5 * 3600), policy, inputs(routes=busy))
    assert d.action == Action.WAIT and any("provisioning" in r for r in d.reasons)
    failing = {
        SiteId("ali-bj"): RouteState(
            recent_attempts=4, recent_failures=3, last_failure=NOW - timedelta(minutes=1)
        )
    }
    d = decide(spec, TenantId("lab"), offers(policy, free=0, wait_s=5 * 3600), policy, inputs(routes=failing))
    assert d.action == Action.WAIT and any("throttled" in r for r in d.reasons)


def test_deadline_slack_moves_a_job_off_spot(policy: Policy) -> None:
    relaxed = job(max_wait="1m", deadline=NOW + timedelta(days=2))
    tight = job(max_wait="1m", deadline=NOW + timedelta(hours=1, minutes=20))
    d_relaxed = decide(relaxed, TenantId("lab"), offers(policy, free=0, wait_s=5 * 3600), policy, inputs())
    d_tight = decide(tight, TenantId("lab"), offers(policy, free=0, wait_s=5 * 3600), policy, inputs())
    assert d_relaxed.offer is not None and d_relaxed.offer.spot
    assert d_tight.offer is not None and not d_tight.offer.spot


def test_no_onprem_option_goes_straight_to_the_cloud(policy: Policy) -> None:
    d = decide(
        job(("A10",), max_wait="1h"), TenantId("lab"), offers(policy, free=8, wait_s=0), policy, inputs()
    )
    assert d.action == Action.RUN and d.burst and d.offer is not None and d.offer.site == "ali-bj"


def test_unplaceable_job_is_rejected_with_reasons(policy: Policy) -> None:
    d = decide(job(("H100",)), TenantId("lab"), offers(policy, free=8, wait_s=0), policy, inputs())
    assert d.action == Action.REJECT and d.reasons


def test_blocked_offers_make_a_job_wait_not_fail(policy: Policy) -> None:
    every = frozenset(o.key for o in static_offers(policy))
    d = decide(
        job(("A10",)), TenantId("lab"), offers(policy, free=0, wait_s=0), policy, inputs(blocked=every)
    )
    assert d.action == Action.WAIT


def test_max_wait_defaults_come_from_policy(policy: Policy) -> None:
    assert effective_max_wait(job(max_wait=None), "lab", policy) == policy.burst.max_wait.default
    assert effective_max_wait(job(max_wait="7m"), "lab", policy) == timedelta(minutes=7)


def test_oscillating_queue_makes_a_bounded_number_of_burst_decisions(policy: Policy) -> None:
    """The on-prem wait swings above and below max_wait every 4 minutes for 3 hours.

    With a 10-minute hysteresis no job whose allowed wait is long bursts while the queue flaps;
    without memory every swing above the threshold would have been a burst.
    """
    spec = job(max_wait="2h")
    submitted = NOW
    bursts = 0
    pending: datetime | None = None
    t = NOW
    while t < NOW + timedelta(hours=3):
        high = (t - NOW) // timedelta(minutes=4) % 2 == 0
        waited = t - submitted
        remaining = max(timedelta(0), timedelta(hours=2) - waited)
        wait_s = (remaining + timedelta(hours=2)).total_seconds() if high else 60.0
        d = decide(
            spec,
            TenantId("lab"),
            offers(policy, free=0, wait_s=wait_s),
            policy,
            inputs(now=t, queued_since=submitted, burst_pending_since=pending),
        )
        if d.action == Action.RUN and d.burst:
            bursts += 1
            break  # a burst is final: the job leaves the queue
        pending = d.facts.burst_pending_since
        t += timedelta(minutes=1)
    # It bursts at most once, and only when its remaining allowed wait ran below the hysteresis.
    assert bursts <= 1
    assert t - submitted >= timedelta(hours=2) - timedelta(minutes=10)
