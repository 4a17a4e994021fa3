"""The size twin of the cold decision path (issue 15, "Cold decisions, not only cached ones")
keeps exactly the offers `filter_hardware_size` keeps, the same objects in the same order;
the fused market-and-size pass keeps what `filter_spot` then `filter_hardware_size` keep.

`keep_hardware_size` reads an offer's count, CPUs and memory from its field mapping (one
attribute look-up per offer, not three); this pins it to the filter on offers and jobs drawn
around the thresholds (zero fields, equal values, values just below), whatever the values.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.model import JobSpec, Offer, TenantId
from broker.placement import PlacementContext
from broker.placement._env import Env, Group, group_offers
from broker.placement.hardware import (
    filter_hardware_model,
    filter_hardware_size,
    keep_hardware_model,
    keep_hardware_size,
)
from broker.placement.pipeline import keep_market_and_size
from broker.placement.spot import filter_spot
from broker.policy import Policy

SITES = ["aliyun-beijing", "aws-us-east-1"]
SIZES = [0.0, 0.0, 1.0, 7.5, 8.0, 96.0, -1.0, float("nan")]

offer_rows = st.lists(
    st.tuples(
        st.sampled_from(SITES),
        st.sampled_from(["A800", "H100", None]),
        st.integers(min_value=0, max_value=8),
        st.sampled_from(SIZES),
        st.sampled_from(SIZES),
        st.booleans(),
    ),
    min_size=1,
    max_size=40,
)
Row = tuple[str, str | None, int, float, float, bool]


def _offers(rows: list[Row]) -> list[Offer]:
    # model_construct: the filter must agree on any stored value, validated or not (NaN, negatives)
    return [
        Offer.model_construct(
            site=site,
            instance_type=f"it-{i}",
            accelerator=acc,
            count=count,
            price_per_hour=1.0,
            cpus=cpus,
            memory_gb=mem,
            spot=spot,
        )
        for i, (site, acc, count, cpus, mem, spot) in enumerate(rows)
    ]


@settings(max_examples=200, deadline=None)
@given(
    rows=offer_rows,
    count=st.integers(min_value=0, max_value=8),
    cpus=st.sampled_from([0, 1, 8, 96]),
    memory=st.sampled_from([0, 7.5, 8, 512]),
)
def test_the_size_twin_keeps_the_offers_the_size_filter_keeps(
    policy: Policy,
    rows: list[Row],
    count: int,
    cpus: int,
    memory: float,
) -> None:
    env = Env(_job(count, cpus, memory, "allowed"), TenantId("pku-nlp"), policy, PlacementContext())
    groups = group_offers(_offers(rows), policy)
    got = keep_hardware_size(env)([(g, g.offers) for g in groups])
    want = [(g, kept) for g in groups if (kept := filter_hardware_size(g, g.offers, env)[0])]
    assert _ids(got) == _ids(want)


def _job(count: int, cpus: int, memory: float, spot: str) -> JobSpec:
    return JobSpec.model_validate(
        {
            "name": "s",
            "command": ["run"],
            "runtime_estimate": "1h",
            "spot": spot,
            "resources": {
                "accelerators": {"count": count},
                **({"cpus": cpus} if cpus else {}),  # the spec takes positive sizes or none
                **({"memory_gb": memory} if memory else {}),
            },
        }
    )


def _ids(pairs: list[tuple[Group, list[Offer]]]) -> list[tuple[int, list[int]]]:
    return [(id(g), [id(o) for o in kept]) for g, kept in pairs]


@settings(max_examples=300, deadline=None)
@given(
    rows=offer_rows,
    count=st.integers(min_value=0, max_value=8),
    cpus=st.sampled_from([0, 1, 8, 96]),
    memory=st.sampled_from([0, 7.5, 8, 512]),
    spot=st.sampled_from(["never", "required", "allowed"]),
    every=st.integers(min_value=1, max_value=3),
    parts=st.booleans(),
)
def test_the_market_and_size_pass_keeps_what_the_spot_then_size_filters_keep(
    policy: Policy, rows: list[Row], count: int, cpus: int, memory: float, spot: str, every: int, parts: bool
) -> None:
    """Whole groups (with `parts`, their market part kept whole when its smallest sizes fit,
    else offer by offer), any other list of a group's offers (offer by offer), twice."""
    env = Env(_job(count, cpus, memory, spot), TenantId("pku-nlp"), policy, PlacementContext())
    groups = group_offers(_offers(rows), policy)
    fused = keep_market_and_size(env, parts)
    for given_ in ([(g, g.offers) for g in groups], [(g, g.offers[::every]) for g in groups]):
        want = []
        for g, offers in given_:
            market = filter_spot(g, offers, env)[0]
            if market and (kept := filter_hardware_size(g, market, env)[0]):
                want.append((g, kept))
        assert _ids(fused(given_)) == _ids(want)
        assert _ids(fused(given_)) == _ids(want)  # the groups' parts kept from the first call


@settings(max_examples=300, deadline=None)
@given(
    count=st.sampled_from([0, 1, 2, 8]),
    any_of=st.lists(st.sampled_from(["A100", "a800", "H100", "L4", "Ascend910B", "T4", "XPU-9"]), max_size=3),
    memory=st.sampled_from([0, 16, 24, 40, 48, 80, 96, 141]),
    stated=st.sampled_from([0.0, 0.0, 24.0, 40.0, 80.0, float("nan")]),
)
def test_the_model_twin_keeps_the_groups_the_model_filter_keeps(
    policy: Policy, offers: list[Offer], count: int, any_of: list[str], memory: int, stated: float
) -> None:
    """`keep_hardware_model` tests the model and the memory per device without the filter's
    messages: the same groups on jobs at the catalog's memory sizes (equal, just above), with an
    offer's own stated memory (0: the accelerator catalog's) or none (CPU-only)."""
    restated = {"accelerator_memory_gb": stated}
    pool = [o.model_copy(update=restated) if i % 3 else o for i, o in enumerate(offers)]
    groups = group_offers(pool, policy)
    job = JobSpec.model_validate(
        {
            "name": "m",
            "command": ["run"],
            "runtime_estimate": "1h",
            "resources": {"accelerators": {"count": count, "any_of": any_of, "min_memory_gb": memory}},
        }
    )
    env = Env(job, TenantId("pku-nlp"), policy, PlacementContext())
    want = filter_hardware_model(list(groups), env)[0]
    assert [id(g) for g in keep_hardware_model(env)(list(groups))] == [id(g) for g in want]
