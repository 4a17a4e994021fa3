"""Scored allowed offers, built only when read: a decision needs the floats and the winner.

`score_all` computes every allowed offer's terms and score with the scorers themselves (one
call per group and term: the reference); `score_columns` computes the same floats (the same
operations in the same order) in one list comprehension per term over every kept offer.
`Scored` picks the best exactly as `rank.best` would and builds the `ScoredOffer` objects
(the chosen one included, as the same object) on first access.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import chain
from typing import overload

from broker.model import Offer
from broker.placement._env import Env, Group
from broker.placement.carbon import carbon_terms, score_carbon
from broker.placement.cost import score_cost, voucher_columns
from broker.placement.parts import Part, build_part
from broker.placement.preference import preference_terms, score_preference
from broker.placement.rank import Q, best, full_chain, sort_key
from broker.placement.types import ScoredOffer
from broker.placement.wait import score_wait
from broker.policy import Policy

Terms = tuple[float, float, float, float, float]
"""cost, voucher, wait, carbon, preference."""

Columns = tuple[list[float], list[float], list[float], list[float], list[float]]
"""The five terms of every offer, one list per term (cost, voucher, wait, carbon, preference)."""

_new = tuple.__new__


def score_all(kept: list[tuple[Group, list[Offer]]], env: Env) -> tuple[list[Offer], Columns]:
    """Every kept offer (group order, then input order) with its five terms, scorer by scorer."""
    offers: list[Offer] = []
    columns: Columns = ([], [], [], [], [])
    for g, members in kept:
        costs, vouchers = score_cost(g, members, env)
        offers.extend(members)
        for column, values in zip(
            columns,
            (
                costs,
                vouchers,
                score_wait(g, members, env),
                score_carbon(g, members, env),
                score_preference(g, members, env),
            ),
            strict=True,
        ):
            column.extend(values)
    return offers, columns


class PerHour:
    """What a shape's scores share whatever the job's runtime: its offers (flat), each one's
    price per hour in the policy currency, `wait` term and accelerator count, and the groups
    with how many of the offers each holds (runs of `offers`, in order).

    Gathered from the kept offers' parts (`broker.placement.parts`: computed once per snapshot)
    when every kept list is one; else computed here over all of them at once, as `build_part`
    computes a part (the same operations, one list comprehension per column)."""

    __slots__ = ("counts", "groups", "hourly", "offers", "sizes", "waits")

    def __init__(self, kept: list[tuple[Group, list[Offer]]], policy: Policy) -> None:
        self.offers: list[Offer] = list(chain.from_iterable(members for _, members in kept))
        self.groups: list[Group] = [g for g, _ in kept]
        self.sizes: list[int] = [len(members) for _, members in kept]
        if all(type(members) is Part for _, members in kept):
            parts: list[Part] = [members for _, members in kept]  # type: ignore[misc]
        else:
            fields = list(chain.from_iterable(g.field_maps(members) for g, members in kept))
            parts = [build_part(self.offers, fields, policy)]
        self.hourly: list[float] = list(chain.from_iterable(p.hourly for p in parts))
        self.waits: list[float] = list(chain.from_iterable(p.waits for p in parts))
        self.counts: list[int] = list(chain.from_iterable(p.counts for p in parts))


def score_columns(base: PerHour, env: Env) -> tuple[list[Offer], Columns]:
    """`score_all`'s offers and floats, computed per term over all offers at once.

    `cost` is (price x rate) x (node-hours x weight), as `score_cost` computes it, so the
    price per hour may come from a `PerHour` kept for the shape (a new runtime reuses it)."""
    factor = env.machine_h * env.policy.objective.price
    costs = [h * factor for h in base.hourly]
    groups, sizes = base.groups, base.sizes
    return base.offers, (
        costs,
        voucher_columns(groups, sizes, costs, env),
        base.waits,
        carbon_terms(groups, sizes, base.counts, env),
        preference_terms(groups, sizes, env),
    )


class Scored(Sequence[ScoredOffer]):
    """The allowed offers of one decision as `ScoredOffer`s, built on first read."""

    __slots__ = ("_built", "_columns", "_list", "_offers", "_scores", "chosen")

    def __init__(self, offers: list[Offer], columns: Columns, chain: Sequence[str]) -> None:
        self._offers = offers
        self._columns = columns
        self._scores = [c + v + w + k + p for c, v, w, k, p in zip(*columns, strict=True)]
        self._built: dict[int, ScoredOffer] = {}
        self._list: list[ScoredOffer] | None = None
        self.chosen = self._best(chain)

    def _make(self, i: int) -> ScoredOffer:
        s = self._built.get(i)
        if s is None:
            cost, voucher, wait, carbon, pref = self._columns
            terms = {
                "cost": cost[i],
                "voucher": voucher[i],
                "wait": wait[i],
                "carbon": carbon[i],
                "preference": pref[i],
            }
            s = self._built[i] = _new(ScoredOffer, (self._offers[i], True, (), self._scores[i], terms))
        return s

    def _best(self, chain: Sequence[str]) -> ScoredOffer | None:
        """`rank.best` over the allowed offers, building only the ones tied on score."""
        scores = self._scores
        if not scores:
            return None
        names = full_chain(chain)
        if names[0] != "score":
            return best(self.items, chain)
        low = min(scores)
        top, near = round(low, Q), low + 1e-5
        ties = [i for i, s in enumerate(scores) if s <= near and round(s, Q) == top]
        if len(ties) == 1:
            return self._make(ties[0])
        return min((self._make(i) for i in ties), key=sort_key(names))

    @property
    def items(self) -> list[ScoredOffer]:
        if self._list is None:  # one pass; the ones `_best` built (`chosen`) stay the same objects
            get = self._built.get
            self._list = [
                get(i)
                or _new(
                    ScoredOffer,
                    (o, True, (), s, {"cost": c, "voucher": v, "wait": w, "carbon": k, "preference": p}),
                )
                for i, (o, s, c, v, w, k, p) in enumerate(
                    zip(self._offers, self._scores, *self._columns, strict=True)
                )
            ]
        return self._list

    def at_sites(self, sites: frozenset[str]) -> list[ScoredOffer]:
        """The allowed offers at these sites, in input order, building only those (the same
        objects `items` gives): a burst decision that stays on-prem never builds the cloud's."""
        if self._list is not None:
            return [s for s in self._list if s.offer.site in sites]
        make = self._make
        return [make(i) for i, o in enumerate(self._offers) if o.site in sites]

    def at(self, i: int) -> ScoredOffer:
        """The i-th allowed offer (the same object `items` and `at_sites` give), building only it."""
        return self._list[i] if self._list is not None else self._make(i)

    def floats(self) -> tuple[list[Offer], list[float], list[float]]:
        """The allowed offers (input order), their scores and their `cost` terms, nothing built."""
        return self._offers, self._scores, self._columns[0]

    def __len__(self) -> int:
        return len(self._offers)

    @overload
    def __getitem__(self, index: int) -> ScoredOffer: ...

    @overload
    def __getitem__(self, index: slice) -> list[ScoredOffer]: ...

    def __getitem__(self, index: int | slice) -> ScoredOffer | list[ScoredOffer]:
        return self.items[index]

    def __iter__(self) -> Iterator[ScoredOffer]:
        return iter(self.items)
