"""Scored allowed offers, built only when read: a decision needs the floats and the winner.

`score_all` computes every allowed offer's terms and score with the scorers themselves (one
call per group and term: the reference); `score_columns` computes the same floats (the same
operations in the same order) in one list comprehension per term over every kept offer, or
with many kept offers as one array operation per step (`broker.placement.vector`).
`Scored` picks the best exactly as `rank.best` would and builds the `ScoredOffer` objects
(the chosen one included, as the same object) on first access.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import chain
from typing import TYPE_CHECKING, overload

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

if TYPE_CHECKING:
    from broker.placement.vector import Floats

Terms = tuple[float, float, float, float, float]
"""cost, voucher, wait, carbon, preference."""

Columns = tuple[list[float], list[float], list[float], list[float], list[float]]
"""The five terms of every offer, one list per term (cost, voucher, wait, carbon, preference)."""

Vectors = tuple["Floats", ...]
"""The same five terms as float64 arrays (`score_columns`)."""

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


VECTOR_MIN = 64
"""Kept offers from which a decision scores with arrays (`broker.placement.vector`): below,
numpy's fixed cost per call (~1 us, some 30 calls) is more than the list comprehensions' (the
two cost the same at ~50 offers by callgrind's count)."""


class PerHour:
    """What a shape's scores share whatever the job's runtime: its offers (flat), the groups
    with how many of the offers each holds (runs of `offers`, in order), and each offer's
    price per hour in the policy currency, `wait` term and accelerator count (`columns()`), or
    those with its group's carbon and preference values as one array (`values()`).

    Gathered from the kept offers' parts (`broker.placement.parts`: computed once per snapshot)
    when every kept list is one; else computed here over all of them at once, as `build_part`
    computes a part (the same operations, one list comprehension per column)."""

    __slots__ = ("_columns", "_parts", "_values", "groups", "kept", "offers", "policy", "sizes")

    def __init__(self, kept: list[tuple[Group, list[Offer]]], policy: Policy) -> None:
        self.kept = kept
        self.policy = policy
        self.offers: list[Offer] = list(chain.from_iterable(members for _, members in kept))
        self.groups: list[Group] = [g for g, _ in kept]
        self.sizes: list[int] = [len(members) for _, members in kept]
        self._parts: list[Part] | None = None
        self._columns: tuple[list[float], list[float], list[int]] | None = None
        self._values: Floats | None = None

    def parts(self) -> list[Part]:
        """The kept lists as parts: themselves when every one is, else one built over all."""
        if self._parts is None:
            kept = self.kept
            if all(type(members) is Part for _, members in kept):
                self._parts = [members for _, members in kept]  # type: ignore[misc]
            else:
                fields = list(chain.from_iterable(g.field_maps(members) for g, members in kept))
                self._parts = [build_part(self.offers, fields, self.policy)]
        return self._parts

    def columns(self) -> tuple[list[float], list[float], list[int]]:
        """Each offer's price per hour (policy currency), `wait` term and accelerator count."""
        if self._columns is None:
            parts = self.parts()
            self._columns = (
                list(chain.from_iterable(p.hourly for p in parts)),
                list(chain.from_iterable(p.waits for p in parts)),
                list(chain.from_iterable(p.counts for p in parts)),
            )
        return self._columns

    def values(self) -> Floats:
        """`columns()` and each offer's group's `scoring` as one 7 x n array (`vector.stack`)."""
        if self._values is None:
            import broker.placement.vector as vector  # numpy loads with a decision, not the CLI

            parts = self.parts()
            if parts and parts[0] is self.kept[0][1]:  # the kept parts themselves
                self._values = vector.gather([p.array() for p in parts])
            else:
                scoring = [g.scoring(self.policy) for g in self.groups]
                self._values = vector.stack(*self.columns(), scoring, self.sizes)
        return self._values

    @property
    def hourly(self) -> list[float]:
        """Each offer's price per hour in the policy currency."""
        return self.columns()[0]


def score_columns(base: PerHour, env: Env) -> tuple[list[Offer], Columns | Vectors]:
    """`score_all`'s offers and floats, computed per term over all offers at once: as arrays
    from `VECTOR_MIN` offers on (as lists when a term would not be a float, `vector.columns`),
    else one list comprehension per term.

    `cost` is (price x rate) x (node-hours x weight), as `score_cost` computes it, so the
    price per hour may come from a `PerHour` kept for the shape (a new runtime reuses it)."""
    if len(base.offers) >= VECTOR_MIN:
        import broker.placement.vector as vector

        found = vector.columns(base.values(), base.groups, base.sizes, env)
        if found is not None:
            return base.offers, found
    hourly, waits, counts = base.columns()
    factor = env.machine_h * env.policy.objective.price
    costs = [h * factor for h in hourly]
    groups, sizes = base.groups, base.sizes
    return base.offers, (
        costs,
        voucher_columns(groups, sizes, costs, env),
        waits,
        carbon_terms(groups, sizes, counts, env),
        preference_terms(groups, sizes, env),
    )


class Scored(Sequence[ScoredOffer]):
    """The allowed offers of one decision as `ScoredOffer`s, built on first read.

    The columns are the scorers' lists (`score_all`) or `score_columns`' arrays; from arrays
    the scores and the tied best come from `broker.placement.vector` (the same floats and the
    same ties) and the lists are made only when every offer is read."""

    __slots__ = ("_arrays", "_built", "_columns", "_list", "_offers", "_scores", "chosen")

    def __init__(self, offers: list[Offer], columns: Columns | Vectors, chain: Sequence[str]) -> None:
        self._offers = offers
        self._built: dict[int, ScoredOffer] = {}
        self._list: list[ScoredOffer] | None = None
        self._arrays: Vectors | None = None
        self._columns: Columns | None = None
        self._scores: list[float] | None = None
        if isinstance(columns[0], list):
            self._columns = columns
            self._scores = [c + v + w + k + p for c, v, w, k, p in zip(*columns, strict=True)]
        else:
            import broker.placement.vector as vector

            self._arrays = (*columns, vector.total(columns))
        self.chosen = self._best(chain)

    def _lists(self) -> tuple[Columns, list[float]]:
        """The columns and scores as lists of floats (made once from the arrays)."""
        if self._columns is None or self._scores is None:
            assert self._arrays is not None
            c, v, w, k, p, scores = (a.tolist() for a in self._arrays)
            self._columns, self._scores = (c, v, w, k, p), scores
        return self._columns, self._scores

    def _make(self, i: int) -> ScoredOffer:
        s = self._built.get(i)
        if s is None:
            if self._scores is None:  # a few offers read from the arrays: no lists made
                assert self._arrays is not None
                cost, voucher, wait, carbon, pref, score = (float(a[i]) for a in self._arrays)
            else:
                (costs, vouchers, waits, carbons, prefs), scores = self._lists()
                cost, voucher, wait, carbon, pref = costs[i], vouchers[i], waits[i], carbons[i], prefs[i]
                score = scores[i]
            terms = {"cost": cost, "voucher": voucher, "wait": wait, "carbon": carbon, "preference": pref}
            s = self._built[i] = _new(ScoredOffer, (self._offers[i], True, (), score, terms))
        return s

    def _best(self, chain: Sequence[str]) -> ScoredOffer | None:
        """`rank.best` over the allowed offers, building only the ones tied on score."""
        if not self._offers:
            return None
        names = full_chain(chain)
        if names[0] != "score":
            return best(self.items, chain)
        ties = self._ties()
        if len(ties) == 1:
            return self._make(ties[0])
        if self._scores is None:  # several ties read from the arrays: one gather per column
            self._gather(ties)
        return min((self._make(i) for i in ties), key=sort_key(names))

    def _gather(self, picked: list[int]) -> None:
        """Build the offers at `picked` (not built yet) from the arrays, one gather per column."""
        assert self._arrays is not None
        built, offers = self._built, self._offers
        values = zip(picked, *(a[picked].tolist() for a in self._arrays), strict=True)
        for i, cost, voucher, wait, carbon, pref, score in values:
            if i not in built:
                terms = {"cost": cost, "voucher": voucher, "wait": wait, "carbon": carbon, "preference": pref}
                built[i] = _new(ScoredOffer, (offers[i], True, (), score, terms))

    def _ties(self) -> list[int]:
        """The offers tied for the lowest score (rounded to `Q` places), in order."""
        if self._arrays is not None:
            import broker.placement.vector as vector

            found = vector.ties(self._arrays[5])
            if found is not None:
                return found
        scores = self._lists()[1]  # the list form (and the reference): a NaN among the scores
        low = min(scores)
        top, near = round(low, Q), low + 1e-5
        return [i for i, s in enumerate(scores) if s <= near and round(s, Q) == top]

    @property
    def items(self) -> list[ScoredOffer]:
        if self._list is None:  # one pass; the ones `_best` built (`chosen`) stay the same objects
            get = self._built.get
            columns, scores = self._lists()
            self._list = [
                get(i)
                or _new(
                    ScoredOffer,
                    (o, True, (), s, {"cost": c, "voucher": v, "wait": w, "carbon": k, "preference": p}),
                )
                for i, (o, s, c, v, w, k, p) in enumerate(zip(self._offers, scores, *columns, strict=True))
            ]
        return self._list

    def at(self, i: int) -> ScoredOffer:
        """The i-th allowed offer (the same object `items` gives), building only it."""
        return self._list[i] if self._list is not None else self._make(i)

    def offers(self) -> list[Offer]:
        """The allowed offers (input order), nothing built and no lists made from the arrays."""
        return self._offers

    def floats(self) -> tuple[list[Offer], list[float], list[float]]:
        """The allowed offers (input order), their scores and their `cost` terms, nothing built."""
        columns, scores = self._lists()
        return self._offers, scores, columns[0]

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
