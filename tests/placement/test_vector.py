"""Score columns as arrays (issue 15, "Cold decisions, not only cached ones"): the floats, the
ties and the winner `broker.placement.vector` gives are the scorers' and `rank.best`'s.

A cold decision scores every kept offer; the array form computes each term with the
scorers' operations in their order, so every float must be the very same (compared by
`repr`: the sign of a zero, a NaN and an int where a float was expected all show).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.model import JobSpec, Offer
from broker.placement import PlacementContext, scored, vector
from broker.placement._env import Env, group_offers
from broker.placement.rank import best
from broker.placement.scored import PerHour, Scored, score_all, score_columns
from broker.policy import Policy


def exact(columns: Sequence[Any]) -> list[list[str]]:
    """Columns (lists or arrays) as the `repr` of each value: equal only when every float is."""
    return [[repr(x) for x in (c if isinstance(c, list) else c.tolist())] for c in columns]


SITES = [
    "shangzhuang-onprem",  # intensity 120, preference -20/h
    "aws-us-east-1",  # preference 5/h
    "aliyun-cn-wulanchabu",  # a voucher site for zhipu-sme
    "nowhere",  # not a policy site: no intensity, no preference
]
rows = st.lists(
    st.tuples(
        st.sampled_from(SITES),
        st.sampled_from(["A800", "H100", "XPU-9", None]),  # XPU-9: no spec, the default power
        st.integers(min_value=0, max_value=16),
        st.sampled_from([0.37, 2.5, 31.2, 0.1, 1e300, 1e308, 0.0]),  # 1e308: overflows to inf
        st.sampled_from(["USD", "CNY", ""]),
        st.sampled_from([0.0, 60.0, 600.0, 1e-3]),
    ),
    min_size=1,
    max_size=40,
)


def _offers(drawn: list[tuple[str, str | None, int, float, str, float]]) -> list[Offer]:
    return [
        Offer.model_construct(
            site=site,
            instance_type=f"it-{i}",
            accelerator=acc,
            count=count,
            price_per_hour=price,
            currency=currency,
            cpus=8.0,
            memory_gb=0.0,
            spot=False,
            expected_wait_s=wait,
        )
        for i, (site, acc, count, price, currency, wait) in enumerate(drawn)
    ]


@settings(max_examples=200, deadline=None)
@given(
    drawn=rows,
    hours=st.sampled_from([0.25, 1.0, 7.0, 133.5]),
    nodes=st.integers(min_value=1, max_value=3),
    tenant=st.sampled_from(["pku-nlp", "zhipu-sme", "unknown-tenant"]),
    balance=st.sampled_from([None, 0.0, 12.5, 1e9, 40]),  # 40: a balance given as an int
    weights=st.sampled_from([(0.0002, 1.0, 1.0), (0.0, 0.5, 3.0), (1e-7, -1.0, 0.3), (1e-7, 1.0, 0.0)]),
)
def test_array_columns_are_the_scorers_floats(
    policy: Policy,
    drawn: list[tuple[str, str | None, int, float, str, float]],
    hours: float,
    nodes: int,
    tenant: str,
    balance: float | None,
    weights: tuple[float, float, float],
) -> None:
    carbon_g, preference, price = weights
    objective = policy.objective.model_copy(
        update={"carbon_g_cost": carbon_g, "preference": preference, "price": price}
    )
    pol = policy.model_copy(update={"document": policy.document.model_copy(update={"objective": objective})})
    assert pol.index is policy.index  # the same sites, tenants and rates
    spec = JobSpec.model_validate(
        {
            "name": "v",
            "command": ["x"],
            "runtime_estimate": f"{hours}h",
            "resources": {"accelerators": {"count": 1}, "nodes": nodes},
        }
    )
    balances = None if balance is None else {"bj-compute-2026q1": balance}
    env = Env(spec, tenant, pol, PlacementContext(voucher_balances=balances))
    kept = [(g, g.offers) for g in group_offers(_offers(drawn), pol)]
    want_offers, want = score_all(kept, env)
    for smallest in (0, 10**9):  # arrays, lists
        with warnings.catch_warnings(), vector_from(smallest):
            warnings.simplefilter("error")  # an overflow to inf is silent, as in Python
            got_offers, got = score_columns(PerHour(kept, pol), env)
        assert smallest == 0 or type(got[0]) is list
        assert [id(o) for o in got_offers] == [id(o) for o in want_offers]
        assert exact(got) == exact(want)
        _same_scored(*_both(got_offers, got, want, pol.objective.rank))


@contextmanager
def vector_from(smallest: int) -> Iterator[None]:
    """Score with arrays from `smallest` kept offers on (`scored.VECTOR_MIN`) for a while."""
    kept = scored.VECTOR_MIN
    scored.VECTOR_MIN = smallest
    try:
        yield
    finally:
        scored.VECTOR_MIN = kept


def _both(offers: list[Offer], got: Any, want: Any, chain: Sequence[str]) -> tuple[Scored, ...]:
    """The two forms scored, or () when the list form raises (a NaN first: Python's `min` then
    leaves no tie) after checking that the array form raises the same."""
    try:
        reference = Scored(offers, want, chain)
    except ValueError:
        with pytest.raises(ValueError):
            Scored(offers, got, chain)
        return ()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return Scored(offers, got, chain), reference


def _same_scored(*pair: Scored) -> None:
    """The same winner and every offer's score and terms (`repr`); nothing to compare without a pair."""
    if not pair:
        return
    got, want = pair

    def row(s: Any) -> tuple[Any, ...]:
        return (id(s.offer), repr(s.score), [(k, repr(v)) for k, v in s.terms.items()])

    assert (got.chosen is None) == (want.chosen is None)
    if want.chosen is not None:
        assert got.chosen is not None and row(got.chosen) == row(want.chosen)
    assert [row(s) for s in got] == [row(s) for s in want]
    assert got.chosen is None or got.chosen in got.items  # the chosen one stays the same object


floats = st.sampled_from([0.0, -0.0, 1.0, 1.0000001, 1.000001, 2.5, 1e-7, float("inf"), float("nan"), 3e5])


@settings(max_examples=300, deadline=None)
@given(
    columns=st.integers(min_value=1, max_value=12).flatmap(
        lambda n: st.lists(st.lists(floats, min_size=n, max_size=n), min_size=5, max_size=5)
    ),
    chain=st.sampled_from([("score",), ("score", "wait", "site"), ("cost", "score"), ()]),
)
def test_array_scores_pick_the_winner_the_lists_pick(
    policy: Policy, offers: list[Offer], columns: list[list[float]], chain: tuple[str, ...]
) -> None:
    """Ties within 1e-6, NaNs (where Python's `min` depends on the order), infinities, both
    zeros: the array form picks the offer the list form and `rank.best` pick."""
    picked = offers[: len(columns[0])]
    arrays = tuple(np.array(c, dtype=np.float64) for c in columns)
    lists = tuple(list(c) for c in columns)
    pair = _both(picked, arrays, lists, chain)
    if not pair:
        return
    got, want = pair
    _same_scored(got, want)
    reference = best(want.items, chain)
    assert reference is not None and want.chosen is not None
    assert reference.offer is want.chosen.offer


@settings(max_examples=100, deadline=None)
@given(drawn=rows, data=st.data())
def test_a_subset_of_a_part_gathers_its_offers_values(
    policy: Policy, drawn: list[tuple[str, str | None, int, float, str, float]], data: st.DataObject
) -> None:
    """A part's subset (the offers of a group that fit a job) takes its offers' columns from the
    part's array when a former decision made it: the values its own offers give."""
    offers = _offers(drawn)
    for g, fresh in zip(group_offers(offers, policy), group_offers(offers, policy), strict=True):
        part = g.part(None, policy)
        picked = data.draw(st.lists(st.integers(0, len(part) - 1), min_size=1, unique=True).map(sorted))
        whole = part.array()
        sub = part.subset(picked)
        assert [id(o) for o in sub] == [id(part[i]) for i in picked]
        assert exact(sub.array()) == exact(whole[:, picked])
        rebuilt = fresh.part(None, policy).subset(picked)  # from the lists: no former array
        assert exact(sub.array()) == exact(
            vector.stack(rebuilt.hourly, rebuilt.waits, rebuilt.counts, [g.scoring(policy)], [len(picked)])
        )
        # a subset of a subset (the offers that fit, then the ones the offer rules keep): its own
        # offers' values, gathered from the whole part's array
        again = data.draw(st.lists(st.integers(0, len(sub) - 1), min_size=1, unique=True).map(sorted))
        inner = sub.subset(again)
        assert [id(o) for o in inner] == [id(sub[i]) for i in again]
        assert inner.hourly == [sub.hourly[i] for i in again] and inner.counts == [
            sub.counts[i] for i in again
        ]
        assert exact(inner.array()) == exact(whole[:, [picked[i] for i in again]])
