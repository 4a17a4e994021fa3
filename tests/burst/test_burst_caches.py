"""The burst decision's shortcuts answer exactly as the plain computations (issue 15, speed):
the cloud order with each spot site's outlook computed once per job, a decision's facts made with
one construction, its waits and scores kept per offer, and the learned runtime ratio from a window
kept sorted (values, not timings)."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import timedelta
from itertools import pairwise, product
from pathlib import Path
from typing import Any

from broker.burst.cloud import (
    CloudPick,
    best_cloud,
    cloud_order,
    cloud_refusal,
    dearer_on_spot,
    onprem_offers,
    spot_risk_cost,
)
from broker.burst.decision import _View
from broker.burst.inputs import BurstInputs, onprem_sites
from broker.burst.money import TenantMoney
from broker.burst.routes import RouteState, route_refusal
from broker.burst.runtimes import HIGH, LOW, RatioLearner, learned_ratio
from broker.burst.spot import spot_refusal
from broker.decision import Action, DecisionFacts
from broker.model import Checkpoint, JobSpec, SiteId, TenantId
from broker.placement import PlacementContext, ScoredOffer, place, prepare_offers
from broker.placement.cost import usable_vouchers
from broker.placement.scored import Scored
from broker.policy import Policy, load_policy
from broker.policy.offers import static_offers
from broker.sim.jobs import EPOCH, build_jobs
from broker.sim.scenario import load_scenario
from broker.sim.synthetic import SyntheticParams, generate

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _plain_order(
    spec: JobSpec,
    allowed: list[ScoredOffer],
    home: frozenset[str],
    policy: Policy,
    tenant: str,
    balances: dict[str, float] | None = None,
) -> list[tuple[float, int, ScoredOffer]]:
    """The order as first written: every cloud offer's own spot risk (less its voucher's share),
    sorted on (total, site, key, index)."""
    owner = policy.tenant(tenant)
    ranked = sorted(
        (
            (
                s.score
                + spot_risk_cost(spec, s, policy, (usable_vouchers(owner, s.offer.site, balances), None)),
                s.offer.site,
                s.offer.key,
                i,
                s,
            )
            for i, s in enumerate(allowed)
            if s.offer.site not in home
        ),
        key=lambda c: c[:4],
    )
    return [(c[0], c[3], c[4]) for c in ranked]


def _specs(policy: Policy, n: int) -> list[tuple[JobSpec, TenantId]]:
    """Synthetic jobs, each at a random runtime with or without checkpoints (some never finish on spot)."""
    scenario = load_scenario(CONFIGS / "scenarios" / "synthetic-llm.yaml")
    rng = random.Random(5)
    out = []
    for job in build_jobs(generate(SyntheticParams(jobs=n), scenario.seed), policy, scenario):
        hours = rng.choice([0.2, 1.0, 7.5, 40.0, 133.5, 9000.0])
        cp = rng.choice([None, Checkpoint(interval=timedelta(minutes=30))])
        spec = job.spec.model_copy(update={"runtime_estimate": timedelta(hours=hours), "checkpoint": cp})
        out.append((spec, job.tenant))
    return out


def test_the_cloud_order_with_one_outlook_per_site_equals_the_plain_sort() -> None:
    policy = load_policy(CONFIGS / "policy-sim.yaml")
    offers = prepare_offers(static_offers(policy), policy)
    home = onprem_sites(policy)
    rates = {policy.burst.sites[s].spot_interruption_risk for s in policy.burst.sites}
    assert len(rates) > 1  # sites differ: an outlook kept across sites would show
    ctx = PlacementContext(now=EPOCH)
    spot = never = covered = 0
    swapped = 0
    rng = random.Random(3)
    zhipu = policy.tenant("zhipu-sme")
    assert zhipu is not None
    voucher, sites = zhipu.vouchers[0].id, set(zhipu.vouchers[0].sites)
    for spec, tenant in _specs(policy, 300):
        scored = place(spec, tenant, offers, policy, ctx).unranked
        assert isinstance(scored, Scored)
        # From the placement's floats (its ScoredOffers built as read), then from a plain list;
        # the voucher's balance ample, spent down or gone (the memo must see it move).
        for balances in (None, {voucher: rng.uniform(0.0, 50.0)}, {voucher: 0.0}, None):
            lazy = list(cloud_order(spec, scored, home, policy, tenant, balances))
            allowed = list(scored)
            got = list(cloud_order(spec, allowed, home, policy, tenant, balances))
            want = _plain_order(spec, allowed, home, policy, tenant, balances)
            for order in (lazy, got):
                assert [(t, i) for t, i, _ in order] == [(t, i) for t, i, _ in want]
                assert all(a is b for (_, _, a), (_, _, b) in zip(order, want, strict=True))
            covered += sum(
                1 for _, _, s in got if s.offer.spot and s.offer.site in sites and balances != {voucher: 0.0}
            )
        spot += sum(1 for _, _, s in got if s.offer.spot)
        never += sum(1 for t, _, _ in got if t == float("inf"))
        rows = [(t, i) for t, i, _ in want]
        swapped += sum(1 for a, b in pairwise(rows) if a[0] == b[0] and a[1] > b[1])
    assert spot and never  # spot offers were priced, and some never complete there
    assert covered  # some spot offers were on a voucher's site
    assert swapped  # equal totals ordered by (site, key), not by index, were met


def test_the_cloud_order_builds_only_the_offers_read() -> None:
    policy = load_policy(CONFIGS / "policy-sim.yaml")
    offers = prepare_offers(static_offers(policy), policy)
    spec, tenant = _specs(policy, 5)[0]
    scored = place(spec, tenant, offers, policy, PlacementContext(now=EPOCH)).unranked
    assert isinstance(scored, Scored)
    rows = iter(cloud_order(spec, scored, onprem_sites(policy), policy, tenant))
    _, i, first = next(rows)
    _, j, second = next(rows)
    built = set(scored._built)
    assert scored._list is None and {i, j} <= built and len(built - {i, j}) <= 1  # (+ placement's chosen)
    assert len(scored) > 10  # many cloud offers were not built
    assert scored.at(i) is first and list(scored)[j] is second  # the same objects once all are built


def test_a_decisions_facts_in_one_replace_equal_the_replaces_in_sequence() -> None:
    """The facts a decision builds once from its base fields, its notes and `done`'s own equal
    the base facts replaced field by field in that order (later ones win)."""
    policy = load_policy(CONFIGS / "policy-sim.yaml")
    offers = prepare_offers(static_offers(policy), policy)
    spec, tenant = _specs(policy, 5)[0]
    expl = place(spec, tenant, offers, policy, PlacementContext(now=EPOCH))
    scored = expl.unranked[0]
    pick = CloudPick(12.345678, scored, 10.126, 2.2249)
    base: dict[str, object] = {"waited_s": 10, "max_wait_s": 600, "remaining_wait_s": 590}
    base["currency"] = policy.currency
    facts = DecisionFacts(waited_s=10, max_wait_s=600, remaining_wait_s=590, currency=policy.currency)
    cases: list[tuple[ScoredOffer | None, CloudPick | None, dict[str, Any]]] = [
        (None, None, {}),
        (scored, None, {"onprem_expected_wait_s": 30}),
        (scored, pick, {"score": 1.0, "burst_in_s": 5}),
        (None, pick, {"cash": 3.0}),
    ]
    notes: list[list[dict[str, object]]] = [
        [],
        [{"onprem_site": "a", "onprem_partition": "a/x"}],
        [
            {"onprem_site": "a", "onprem_expected_wait_s": 12, "cloud_offer": "c"},
            {"cloud_total_cost": 9.5, "cloud_offer": "d", "score": 2.0, "cash": 1.0},
        ],
    ]
    for (offer, p, more), noted in product(cases, notes):
        v = _View(spec, tenant, policy, BurstInputs(now=EPOCH, queued_since=EPOCH), expl, 590.0, base)
        want = facts
        for fields in noted:  # what the decision notes on its way, as a replace each
            v.note(**fields)
            want = replace(want, **fields)
        want = replace(want, **more) if more else want
        if offer is not None:
            want = replace(want, score=round(offer.score, 4))
        if p is not None:
            want = replace(want, cash=round(p.cash, 2), voucher=round(p.voucher, 2))
        assert v.done(Action.WAIT, offer, "why", pick=p, **more).facts == want


def test_the_learned_ratio_from_a_window_kept_sorted_equals_the_ratio_of_the_window() -> None:
    rng = random.Random(3)
    values = [0.0, -5.0, 60.0, 600.0, 3600.0, 7200.0]
    seen: set[float] = set()
    for window in (0, 1, 2, 3, 50):
        learner = RatioLearner(window)
        for n in range(1500):
            tenant = rng.choice(["a", "b", "c"])
            est = rng.choice([*values, rng.uniform(1, 9000)])
            actual = rng.choice([*values, rng.uniform(0, 9000), rng.uniform(0, 20000), est, 2 * est])
            if window == 50 and n == 700:  # not finite: the tenant's window is read whole from then on
                tenant, est, actual = "c", 600.0, float("inf")
            learner.observe(tenant, est, actual)
            assert learner.ratio(tenant) == learned_ratio(learner._runs[tenant]), (window, n, tenant)
            seen.add(learner.ratio(tenant))
    assert learner._kept["c"] is None and learner._kept["a"] and learner._kept["b"]
    assert len(seen - {LOW, HIGH, 1.0}) > 100  # medians and spreads vary, not only the clamps


def test_a_views_waits_and_scores_kept_per_offer_equal_the_plain_formulas() -> None:
    policy = load_policy(CONFIGS / "policy-sim.yaml")
    offers = prepare_offers(static_offers(policy), policy)
    home = onprem_sites(policy)
    factor, per_s = policy.burst.wait_estimate_factor, policy.objective.wait_hour_cost / 3600
    rng = random.Random(8)
    seen = 0
    for spec, tenant in _specs(policy, 60):
        expl = place(spec, tenant, offers, policy, PlacementContext(now=EPOCH))
        mine = [s for s in expl.unranked if s.offer.site in home]
        parts = sorted({s.offer.partition for s in mine})
        projected = {p: rng.choice([0.0, 90.0, float("inf")]) for p in parts if rng.random() < 0.5}
        capacity = {p: (rng.randint(0, 8), rng.uniform(0, 900)) for p in parts if rng.random() < 0.5}
        adjust = {p: (1, rng.uniform(0, 60)) for p in parts if rng.random() < 0.5}
        inputs = BurstInputs(
            now=EPOCH,
            queued_since=EPOCH,
            projected_wait=projected,
            onprem_capacity=capacity,
            onprem_adjust=adjust,
        )
        facts = {"waited_s": 0, "max_wait_s": 600, "remaining_wait_s": 600, "currency": policy.currency}
        v = _View(spec, tenant, policy, inputs, expl, 600.0, facts)
        for s in [*mine, *mine[::-1], *expl.unranked[:5]]:
            part = s.offer.partition
            if part in projected:
                wait = min(projected[part], 1e9)
            else:
                base = capacity[part][1] if part in capacity else s.offer.expected_wait_s
                wait = (base + adjust.get(part, (0, 0.0))[1]) * factor
            assert v.wait(s) == wait
            assert v.score(s) == s.score + (wait - s.offer.expected_wait_s) * per_s
            seen += 1
    assert seen > 100


def test_the_onprem_offers_built_alone_are_the_ones_the_whole_list_gives() -> None:
    """`onprem_offers` builds only the on-prem `ScoredOffer`s (at the indices kept per offer list,
    read from placement's arrays without making its lists); read before or after the whole list,
    it gives the same offers, scores and terms, as the same objects, in input order."""
    policy = load_policy(CONFIGS / "policy-sim.yaml")
    offers = prepare_offers(static_offers(policy), policy)
    home = onprem_sites(policy)
    ctx = PlacementContext(now=EPOCH)
    seen_home = seen_cloud = from_arrays = 0
    for n, (spec, tenant) in enumerate(_specs(policy, 120)):
        scored = place(spec, tenant, offers, policy, ctx).unranked
        first = onprem_offers(scored, home) if n % 2 else None  # half of them before the whole list
        assert isinstance(scored, Scored)
        from_arrays += first is not None and scored._scores is None  # no lists made from the arrays
        whole = list(scored)
        want = [s for s in whole if s.offer.site in home]
        got = onprem_offers(scored, home)

        def rows(xs: list[ScoredOffer]) -> list[object]:
            return [(s.offer.key, s.score, s.terms) for s in xs]

        assert rows(got) == rows(want)
        assert all(a is b for a, b in zip(got, want, strict=True))
        if first is not None:
            assert all(a is b for a, b in zip(first, want, strict=True)) and len(first) == len(want)
        seen_home += len(want)
        seen_cloud += len(whole) - len(want)
    assert seen_home and seen_cloud and from_arrays  # both kinds of offer were allowed


def _plain_best_cloud(
    spec: JobSpec,
    tenant: TenantId,
    allowed: Scored,
    policy: Policy,
    inputs: BurstInputs,
    home: frozenset[str],
) -> CloudPick | list[str]:
    """`best_cloud` as first written: every offer in the cloud order through `cloud_refusal`."""
    slack_spot_ok = True
    if spec.deadline is not None:
        runtime_s = spec.runtime_estimate.total_seconds()
        slack = (spec.deadline - inputs.now).total_seconds() - runtime_s
        slack_spot_ok = slack >= runtime_s * (policy.burst.deadline_slack_factor - 1)
    refused: list[tuple[int, str]] = []
    over: list[tuple[str, str]] = []  # every offer before the pick: its route's refusal, else its own
    rows = list(cloud_order(spec, allowed, home, policy, tenant, inputs.money.voucher_balances))
    for k, (total, i, s) in enumerate(rows):
        why = cloud_refusal(s, spec, tenant, policy, inputs, slack_spot_ok)
        if isinstance(why, str):
            refused.append((i, why))
            route = route_refusal(s.offer.site, inputs.routes.get(SiteId(s.offer.site)), policy, inputs.now)
            over.append((s.offer.key, route or why))
            continue
        slack_h = None if spec.deadline is None else (spec.deadline - inputs.now).total_seconds() / 3600
        for _, _, later in rows[k + 1 :]:  # scored better, ranked after it by spot risk
            if later.offer.spot and later.score < s.score - 1e-9:
                limit = spot_refusal(spec, later.offer, policy, slack_h=slack_h)
                over.append((later.offer.key, limit or dearer_on_spot(spec, later.offer, policy)))
        return CloudPick(total, s, why[0], why[1], tuple(over))  # (`skipped` here: all passed over)
    return [why for _, why in sorted(refused)]


def test_the_best_cloud_passing_over_refused_routes_equals_every_offer_refused_in_turn() -> None:
    """`best_cloud` passes over the offers of a site whose route refuses (route limits, throttle)
    and makes their reasons only when no offer is usable: the same pick, or the same reasons in
    the same order, as asking `cloud_refusal` of every offer in turn."""
    policy = load_policy(CONFIGS / "policy-sim.yaml")
    offers = prepare_offers(static_offers(policy), policy)
    home = onprem_sites(policy)
    sites = sorted(policy.burst.sites)
    rng = random.Random(11)
    now = EPOCH + timedelta(days=3)
    picked = refusals = passed_over_then_picked = riskier = 0
    for spec, tenant in _specs(policy, 160):
        if rng.random() < 0.5:
            spec = spec.model_copy(update={"deadline": now + spec.runtime_estimate * rng.choice([1.1, 3.0])})
        scored = place(spec, tenant, offers, policy, PlacementContext(now=now)).unranked
        assert isinstance(scored, Scored)
        for _ in range(4):
            routes = {}
            for site in sites:  # at the provisioning limit, throttled after failures, or open
                limit = policy.burst.sites[site].max_provisioning
                how = rng.choice(["limit", "throttled", "open", "open"])
                if how == "limit":
                    routes[SiteId(site)] = RouteState(provisioning=limit)
                elif how == "throttled":
                    routes[SiteId(site)] = RouteState(
                        recent_attempts=20, recent_failures=20, last_failure=now - timedelta(seconds=5)
                    )
            budget = rng.choice([None, 0.0, 5.0, 1e9])
            inputs = BurstInputs(
                now=now, queued_since=now, money=TenantMoney(budget_left=budget), routes=routes
            )
            got = best_cloud(spec, tenant, scored, policy, inputs, home)
            want = _plain_best_cloud(spec, tenant, scored, policy, inputs, home)
            if isinstance(got, CloudPick) and isinstance(want, CloudPick):
                assert got.passed_over == want.passed_over
                riskier += len(got.passed_over) > len(got.skipped)  # scored better, ranked after
                got, want = replace(got, skipped=(), later=None), replace(want, skipped=())
            assert got == want
            if isinstance(got, CloudPick):
                assert isinstance(want, CloudPick) and got.scored is want.scored
                picked += 1
                passed_over_then_picked += any(
                    route_refusal(s.offer.site, routes.get(SiteId(s.offer.site)), policy, now) is not None
                    for total, _, s in cloud_order(spec, scored, home, policy, tenant)
                    if total < got.total
                )
            else:
                refusals += len(got) > 0
    assert picked and refusals and passed_over_then_picked  # picks behind refused routes, and refusals
    assert riskier  # picks with a better-scored spot offer ranked after them
