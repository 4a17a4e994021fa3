"""A market part's offers with enough accelerators (issue 15, "Cold decisions, not only cached
ones"): when only the count can reject an offer of a part, the offers a job keeps are a cell of
the part's partition by count, kept with the snapshot and shared by every job whose count no
offer's count lies between. Each job, whichever came first, keeps what the spot and size
filters keep, then what the offer rules keep on the plain CEL path, and scores the same floats.
"""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from broker.model import JobSpec, Offer, TenantId
from broker.placement import PlacementContext
from broker.placement._env import Env, group_offers
from broker.placement.hardware import filter_hardware_size
from broker.placement.parts import Part
from broker.placement.pipeline import keep_market_and_size
from broker.placement.rules import filter_offer_rules, keep_offer_rules
from broker.placement.scored import PerHour, score_all, score_columns
from broker.placement.spot import filter_spot
from tests.placement.test_parts import OFFER_RULES
from tests.placement.test_vector import exact, vector_from

NAN = float("nan")
SITES = ("aws-us-east-1", "aws-ap-northeast-1")

Row = tuple[int, str, float, float, float, bool, float]
rows = st.lists(
    st.tuples(
        st.sampled_from([0, 1]),  # the site
        st.sampled_from(["A100", "L4"]),
        st.sampled_from([0, 1, 2, 4, 8, 12, NAN]),  # a NaN count never fails the size test
        st.sampled_from([0.0, 4.0, 8.0, 96.0, NAN]),
        st.sampled_from([0.0, 16.0, 64.0, NAN]),
        st.booleans(),
        st.sampled_from([0.5, 2.0, 31.2]),
    ),
    min_size=1,
    max_size=30,
)
Job = tuple[int, int, int, str, str]
jobs_drawn = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=13),
        st.sampled_from([0, 1, 4, 8, 16]),
        st.sampled_from([0, 8, 32, 100]),
        st.sampled_from(["high", "normal"]),
        st.sampled_from(["never", "allowed", "required"]),
    ),
    min_size=1,
    max_size=6,
)


def _offers(drawn: list[Row]) -> list[Offer]:
    return [
        Offer.model_construct(
            site=SITES[site],
            instance_type=f"it-{i}",
            accelerator=acc,
            count=count,
            price_per_hour=price,
            currency="USD",
            cpus=cpus,
            memory_gb=memory,
            spot=spot,
            expected_wait_s=0.0,
        )
        for i, (site, acc, count, cpus, memory, spot, price) in enumerate(drawn)
    ]


def _env(count: int, cpus: int, memory: int, priority: str, spot: str) -> Env:
    resources: dict[str, object] = {"accelerators": {"count": count}}
    if cpus:
        resources["cpus"] = cpus
    if memory:
        resources["memory_gb"] = memory
    job = JobSpec.model_validate(
        {
            "name": "c",
            "command": ["x"],
            "runtime_estimate": "2h",
            "priority": priority,
            "spot": spot,
            "resources": resources,
        }
    )
    return Env(job, TenantId("t-sme"), OFFER_RULES, PlacementContext())


def _ids(pairs: list[tuple[object, list[Offer]]]) -> list[tuple[int, list[int]]]:
    return [(id(g), [id(o) for o in kept]) for g, kept in pairs]


@example(  # counts 1, 4, 8 and NaN: jobs of 3 and 4 share a cell, 5 has its own, 9 keeps the NaN only
    drawn=[(0, "A100", c, 8.0, 64.0, False, 2.0) for c in (1, 4, 8, NAN, 4, 1)],
    jobs=[(n, 1, 0, "high" if n == 5 else "normal", "allowed") for n in (3, 4, 5, 9)],
)
@example(  # the CPUs (then the memory) reject too: no cell, each offer tested
    drawn=[(0, "A100", c, cpus, 16.0, False, 2.0) for c, cpus in ((1, 4.0), (4, 4.0), (8, 96.0), (8, 4.0))],
    jobs=[(4, 1, 0, "normal", "allowed"), (4, 8, 0, "normal", "allowed"), (4, 1, 32, "normal", "allowed")],
)
@settings(max_examples=200, deadline=None)
@given(drawn=rows, jobs=jobs_drawn)
def test_count_cells_kept_across_jobs_keep_what_the_filters_keep(drawn: list[Row], jobs: list[Job]) -> None:
    groups = group_offers(_offers(drawn), OFFER_RULES)  # one grouping: its parts and cells serve every job
    for shape in jobs:
        OFFER_RULES.rules.clear()  # cold verdicts, the parts and cells kept
        env = _env(*shape)
        got = keep_market_and_size(env, parts=True)([(g, g.offers) for g in groups if g.offers])
        want = []
        for g in groups:
            kept = filter_spot(g, g.offers, env)[0]
            kept = filter_hardware_size(g, kept, env)[0] if kept else kept
            if kept:
                want.append((g, kept))
        assert _ids(got) == _ids(want)
        step = keep_offer_rules(env)
        got = step(got) if step is not None else got
        OFFER_RULES.rules.fast = False
        try:
            want = [(g, k) for g, offers in want if (k := filter_offer_rules(g, offers, env)[0])]
        finally:
            OFFER_RULES.rules.fast = True
        assert _ids(got) == _ids(want)
        want_offers, want_columns = score_all(want, env)
        for smallest in (0, 10**9):  # from the cells' arrays (kept, reused by later jobs), as lists
            with vector_from(smallest):
                got_offers, got_columns = score_columns(PerHour(got, OFFER_RULES), env)
            assert [id(o) for o in got_offers] == [id(o) for o in want_offers]
            assert exact(got_columns) == exact(want_columns)


def test_a_cell_is_shared_by_the_counts_no_offer_count_lies_between() -> None:
    """The path the property test runs through is the kept cell (not a subset per decision)."""
    offers = _offers([(0, "A100", c, 8.0, 64.0, False, 2.0) for c in (1, 4, 8, NAN, 4, 1)])
    (group,) = group_offers(offers, OFFER_RULES)

    def kept(count: int) -> Part:
        ((_, cell),) = keep_market_and_size(_env(count, 1, 0, "normal", "allowed"))([(group, group.offers)])
        assert type(cell) is Part and cell.kept and not cell.whole
        return cell

    three, four, five, nine = kept(3), kept(4), kept(5), kept(9)
    assert three is four and five is not four and nine is not five
    assert [o.instance_type for o in four] == ["it-1", "it-2", "it-3", "it-4"]
    assert [o.instance_type for o in five] == ["it-2", "it-3"]
    assert [o.instance_type for o in nine] == ["it-3"]
    assert kept(4) is four  # kept: a later job with the same cell reads the same part
