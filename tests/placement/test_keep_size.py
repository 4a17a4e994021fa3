"""The size twin of the cold decision path (issue 15, "Cold decisions, not only cached ones")
keeps exactly the offers `filter_hardware_size` keeps, the same objects in the same order.

`keep_hardware_size` reads an offer's count, CPUs and memory from its field mapping (one
attribute look-up per offer, not three); this pins it to the filter on offers and jobs drawn
around the thresholds (zero fields, equal values, values just below), whatever the values.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.model import JobSpec, Offer, TenantId
from broker.placement import PlacementContext
from broker.placement._env import Env, group_offers
from broker.placement.hardware import filter_hardware_size, keep_hardware_size
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
    ),
    min_size=1,
    max_size=40,
)


def _offers(rows: list[tuple[str, str | None, int, float, float]]) -> list[Offer]:
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
        )
        for i, (site, acc, count, cpus, mem) in enumerate(rows)
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
    rows: list[tuple[str, str | None, int, float, float]],
    count: int,
    cpus: int,
    memory: float,
) -> None:
    job = JobSpec.model_validate(
        {
            "name": "s",
            "command": ["run"],
            "runtime_estimate": "1h",
            "resources": {
                "accelerators": {"count": count},
                **({"cpus": cpus} if cpus else {}),  # the spec takes positive sizes or none
                **({"memory_gb": memory} if memory else {}),
            },
        }
    )
    env = Env(job, TenantId("pku-nlp"), policy, PlacementContext())
    groups = group_offers(_offers(rows), policy)
    got = keep_hardware_size(env)([(g, g.offers) for g in groups])
    want = [(g, kept) for g in groups if (kept := filter_hardware_size(g, g.offers, env)[0])]
    assert [(id(g), [id(o) for o in kept]) for g, kept in got] == [
        (id(g), [id(o) for o in kept]) for g, kept in want
    ]
