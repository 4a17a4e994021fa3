"""Scored allowed offers, built only when read: a decision needs the floats and the winner.

`score_all` computes every allowed offer's terms and score (the same sums, in the same order,
as a `ScoredOffer` holds); `Scored` picks the best exactly as `rank.best` would and builds
the `ScoredOffer` objects (the chosen one included, as the same object) on first access.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import overload

from broker.model import Offer
from broker.placement._env import Env, Group
from broker.placement.carbon import score_carbon
from broker.placement.cost import score_cost
from broker.placement.preference import score_preference
from broker.placement.rank import Q, best, full_chain, sort_key
from broker.placement.types import ScoredOffer
from broker.placement.wait import score_wait

Terms = tuple[float, float, float, float, float]
"""cost, voucher, wait, carbon, preference."""

_new = tuple.__new__


def score_all(kept: list[tuple[Group, list[Offer]]], env: Env) -> tuple[list[Offer], list[Terms]]:
    """Every kept offer (group order, then input order) with its five terms."""
    offers: list[Offer] = []
    terms: list[Terms] = []
    for g, members in kept:
        costs, vouchers = score_cost(g, members, env)
        waits = score_wait(g, members, env)
        carbons = score_carbon(g, members, env)
        prefs = score_preference(g, members, env)
        offers.extend(members)
        terms.extend(zip(costs, vouchers, waits, carbons, prefs, strict=True))
    return offers, terms


class Scored(Sequence[ScoredOffer]):
    """The allowed offers of one decision as `ScoredOffer`s, built on first read."""

    __slots__ = ("_built", "_list", "_offers", "_scores", "_terms", "chosen")

    def __init__(self, offers: list[Offer], terms: list[Terms], chain: Sequence[str]) -> None:
        self._offers = offers
        self._terms = terms
        self._scores = [c + v + w + k + p for c, v, w, k, p in terms]
        self._built: dict[int, ScoredOffer] = {}
        self._list: list[ScoredOffer] | None = None
        self.chosen = self._best(chain)

    def _make(self, i: int) -> ScoredOffer:
        s = self._built.get(i)
        if s is None:
            c, v, w, k, p = self._terms[i]
            terms = {"cost": c, "voucher": v, "wait": w, "carbon": k, "preference": p}
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
        top = round(low, Q)
        ties = [i for i, s in enumerate(scores) if s <= low + 1e-5 and round(s, Q) == top]
        if len(ties) == 1:
            return self._make(ties[0])
        return min((self._make(i) for i in ties), key=sort_key(names))

    @property
    def items(self) -> list[ScoredOffer]:
        if self._list is None:
            self._list = [self._make(i) for i in range(len(self._offers))]
        return self._list

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
