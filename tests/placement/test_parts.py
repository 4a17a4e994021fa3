"""A group's market parts (issue 15, "Cold decisions, not only cached ones"): the per-offer
values kept with the snapshot are the ones the scorers compute from each offer, and the
market-and-size pass keeps what the filters keep, whichever job came first.

The parts are built on first use and kept with the catalog's snapshot, so a later job with
another market, size or runtime reads values a former job's decision built: these tests run
several jobs over one grouping and compare each with the plain filters and scorers.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from bench.placement import load_policy, write_policy
from broker.model import JobSpec, Offer, TenantId
from broker.placement import PlacementContext
from broker.placement._env import Env, group_offers
from broker.placement.hardware import filter_hardware_size
from broker.placement.parts import Part
from broker.placement.pipeline import keep_market_and_size
from broker.placement.price_cap import filter_price_cap, keep_price_cap
from broker.placement.rules import filter_offer_rules, keep_offer_rules
from broker.placement.scored import PerHour, score_all, score_columns
from broker.placement.spot import filter_spot
from broker.policy import Policy
from tests.placement.test_vector import exact, vector_from

rows = st.lists(
    st.tuples(
        st.sampled_from(["aliyun-beijing", "aws-us-east-1"]),
        st.sampled_from(["A800", "H100", None]),
        st.integers(min_value=0, max_value=8),
        st.sampled_from([0.0, 1.0, 8.0, 96.0, float("nan")]),
        st.booleans(),
        st.sampled_from([0.37, 2.5, 31.2, 0.1]),
        st.sampled_from(["USD", "CNY", "", "XTS"]),  # XTS: no rate in the policy
        st.sampled_from([0.0, 60.0, 600.0, 1e-3]),
    ),
    min_size=1,
    max_size=30,
)
job_shapes = st.tuples(
    st.integers(min_value=0, max_value=8),
    st.sampled_from([0, 1, 8]),
    st.sampled_from(["never", "required", "allowed"]),
    st.sampled_from([1, 6, 30]),
)


def _offers(drawn: list[tuple[str, str | None, int, float, bool, float, str, float]]) -> list[Offer]:
    return [
        Offer.model_construct(
            site=site,
            instance_type=f"it-{i}",
            accelerator=acc,
            count=count,
            price_per_hour=price,
            currency=currency,
            cpus=cpus,
            memory_gb=0.0,
            spot=spot,
            expected_wait_s=wait,
        )
        for i, (site, acc, count, cpus, spot, price, currency, wait) in enumerate(drawn)
    ]


def _job(count: int, cpus: int, spot: str, hours: int) -> JobSpec:
    return JobSpec.model_validate(
        {
            "name": "p",
            "command": ["run"],
            "runtime_estimate": f"{hours}h",
            "spot": spot,
            "resources": {"accelerators": {"count": count}, **({"cpus": cpus} if cpus else {})},
        }
    )


@settings(max_examples=200, deadline=None)
@given(drawn=rows, jobs=st.lists(job_shapes, min_size=1, max_size=4))
def test_parts_kept_across_jobs_filter_and_score_like_the_filters_and_scorers(
    policy: Policy,
    drawn: list[tuple[str, str | None, int, float, bool, float, str, float]],
    jobs: list[tuple[int, int, str, int]],
) -> None:
    groups = group_offers(_offers(drawn), policy)  # one grouping: its parts serve every job
    for shape in jobs:
        env = Env(_job(*shape), TenantId("pku-nlp"), policy, PlacementContext())
        got = keep_market_and_size(env, parts=True)([(g, g.offers) for g in groups if g.offers])
        got = keep_price_cap(env)(got)
        want = []
        for g in groups:
            kept = filter_spot(g, g.offers, env)[0]
            kept = filter_hardware_size(g, kept, env)[0] if kept else kept
            kept = filter_price_cap(g, kept, env)[0] if kept else kept
            if kept:
                want.append((g, kept))
        assert [(id(g), [id(o) for o in kept]) for g, kept in got] == [
            (id(g), [id(o) for o in kept]) for g, kept in want
        ]
        want_offers, want_columns = score_all(want, env)
        for smallest in (0, 10**9):  # as arrays (the parts' arrays reused by later jobs), as lists
            with vector_from(smallest):
                got_offers, got_columns = score_columns(PerHour(got, policy), env)
            assert [id(o) for o in got_offers] == [id(o) for o in want_offers]
            assert exact(got_columns) == exact(want_columns)  # the same operations in the same order


with tempfile.TemporaryDirectory() as _tmp:
    OFFER_RULES = load_policy(
        write_policy(Path(_tmp))
    )  # the benchmark's: `job.priority == "high" && offer.spot`
OFFER_SITES = sorted(OFFER_RULES.index.sites)[:3]


@settings(max_examples=150, deadline=None)
@given(drawn=rows, priority=st.sampled_from(["high", "normal"]), count=st.integers(min_value=0, max_value=8))
def test_offer_rules_keep_from_a_part_what_the_filter_keeps(
    drawn: list[tuple[str, str | None, int, float, bool, float, str, float]], priority: str, count: int
) -> None:
    """The offer rules keep from a group's market part (whole, or the offers that fit the job)
    exactly what the filter keeps on the plain CEL path."""
    policy = OFFER_RULES
    offers = [o.model_copy(update={"site": OFFER_SITES[i % 3]}) for i, o in enumerate(_offers(drawn))]
    groups = group_offers(offers, policy)
    job = JobSpec.model_validate(
        {
            "name": "r",
            "command": ["x"],
            "runtime_estimate": "1h",
            "priority": priority,
            "resources": {"accelerators": {"count": count}},
        }
    )
    policy.rules.clear()
    env = Env(job, TenantId("t-sme"), policy, PlacementContext())
    kept = keep_market_and_size(env, parts=True)([(g, g.offers) for g in groups if g.offers])
    step = keep_offer_rules(env)
    got = step(kept) if step is not None else kept
    policy.rules.fast = False
    try:
        want = [(g, k) for g, offers in kept if (k := filter_offer_rules(g, list(offers), env)[0])]
    finally:
        policy.rules.fast = True
    assert [(id(g), [id(o) for o in k]) for g, k in got] == [(id(g), [id(o) for o in k]) for g, k in want]


def _with_offer_rules(*extra: tuple[str, str, str]) -> Policy:
    """The benchmark's policy with more offer rules: (id, deny expression, sites or "")."""
    with tempfile.TemporaryDirectory() as tmp:
        path = write_policy(Path(tmp))
        text = path.read_text(encoding="utf-8") + "".join(
            f"    - id: {name}\n      deny: '{expr}'\n      reason: {name}\n"
            + (f"      sites: {sites}\n" if sites else "")
            for name, expr, sites in extra
        )
        path.write_text(text, encoding="utf-8")
        return load_policy(path)


MIXED_SITES = ["aws-us-east-1", "aws-ap-northeast-1", "aws-ap-northeast-2"]
OFFER_POLICIES = (
    (OFFER_RULES, OFFER_SITES),
    (  # rules reading the site, the hardware
        _with_offer_rules(
            ("site-spot", 'site.country == "US" && offer.spot', ""),
            ("h100-count", 'hardware.family == "H100" && offer.count >= 4', ""),
        ),
        MIXED_SITES,
    ),
    (
        _with_offer_rules(("scoped", '!offer.spot && job.priority == "normal"', "[aws-ap-northeast-2]")),
        MIXED_SITES,
    ),
)


def _rule_job(priority: str, count: int, hours: int) -> JobSpec:
    return JobSpec.model_validate(
        {
            "name": "r",
            "command": ["x"],
            "runtime_estimate": f"{hours}h",
            "priority": priority,
            "resources": {"accelerators": {"count": count}},
        }
    )


@example(  # an H100 group (at aws-ap-northeast-1: rows 1, 4, 7) whose rules keep two of its three classes
    drawn=[
        ("x", "A800", 1, 0.0, False, 1.0, "USD", 0.0),
        ("x", "H100", 8, 0.0, False, 2.5, "USD", 0.0),
        ("x", "A800", 1, 0.0, False, 1.0, "USD", 0.0),
        ("x", "A800", 1, 0.0, False, 1.0, "USD", 0.0),
        ("x", "H100", 2, 0.0, False, 0.37, "USD", 60.0),
        ("x", "A800", 1, 0.0, False, 1.0, "USD", 0.0),
        ("x", "A800", 1, 0.0, False, 1.0, "USD", 0.0),
        ("x", "H100", 1, 0.0, False, 0.1, "CNY", 0.0),
    ],
    which=1,
    jobs=[("normal", 1, 1), ("high", 1, 30)],
)
@example(  # an H100 and an A800 group at one site, the same offer values: the hardware rule tells them apart
    drawn=[
        ("aliyun-beijing", "H100", 8, 0.0, False, 1.0, "USD", 0.0),
        ("aliyun-beijing", "H100", 0, 0.0, False, 1.0, "USD", 0.0),
        ("aliyun-beijing", "H100", 0, 0.0, False, 1.0, "USD", 0.0),
        ("aliyun-beijing", "A800", 8, 0.0, False, 1.0, "USD", 0.0),
    ],
    which=1,
    jobs=[("normal", 1, 1)],
)
@settings(max_examples=150, deadline=None)
@given(
    drawn=rows,
    which=st.sampled_from([0, 1, 2]),
    jobs=st.lists(
        st.tuples(
            st.sampled_from(["high", "normal"]),
            st.integers(min_value=0, max_value=8),
            st.sampled_from([1, 30]),
        ),
        min_size=1,
        max_size=5,
    ),
)
def test_offer_rules_keep_parts_across_jobs_that_score_like_the_scorers(
    drawn: list[tuple[str, str | None, int, float, bool, float, str, float]],
    which: int,
    jobs: list[tuple[str, int, int]],
) -> None:
    """A group's offers by the values the offer rules read, and each such class's offers, are
    kept with its part: each later job, whatever its verdicts, keeps what the filter keeps on the
    plain CEL path, as parts (so it scores from arrays) whose values are its offers' own; with
    rules reading the site or the hardware too, one decision's verdicts are not shared across them."""
    policy, sites = OFFER_POLICIES[which]
    offers = [o.model_copy(update={"site": sites[i % 3]}) for i, o in enumerate(_offers(drawn))]
    groups = group_offers(offers, policy)  # one grouping: its parts serve every job
    for priority, count, hours in jobs:
        policy.rules.clear()  # cold verdicts, the parts kept
        env = Env(_rule_job(priority, count, hours), TenantId("t-sme"), policy, PlacementContext())
        kept = keep_market_and_size(env, parts=True)([(g, g.offers) for g in groups if g.offers])
        step = keep_offer_rules(env)
        got = step(kept) if step is not None else kept
        policy.rules.fast = False
        try:
            want = [(g, k) for g, offers in kept if (k := filter_offer_rules(g, list(offers), env)[0])]
        finally:
            policy.rules.fast = True
        assert [(id(g), [id(o) for o in k]) for g, k in got] == [(id(g), [id(o) for o in k]) for g, k in want]
        assert all(type(k) is Part for _, k in got)  # a part loses offers to a verdict: a part still
        want_offers, want_columns = score_all(want, env)
        for smallest in (0, 10**9):  # from the parts' arrays (kept ones reused by later jobs), as lists
            with vector_from(smallest):
                got_offers, got_columns = score_columns(PerHour(got, policy), env)
            assert [id(o) for o in got_offers] == [id(o) for o in want_offers]
            assert exact(got_columns) == exact(want_columns)
