"""A snapshot's offers in group order, for the decision's per-offer passes (the cold path).

`place()` keeps and scores offers over every candidate group at once: a selection is a list
of positions into `Flat.offers` (ascending, so group order then input order), and each pass
is one list comprehension or one C-level `map` over it instead of one per group. Offer fields
are read from each offer's `__dict__` (taken once per snapshot): on a pydantic model every
attribute read goes through its `__getattr__` hook (~40-55 ns), a dict subscript by
`itemgetter` costs a fraction of that.

A filter without a positional twin still runs on (group, offers) pairs (`through`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import accumulate, chain, groupby, repeat
from operator import attrgetter, itemgetter
from typing import Any

from broker.model import Offer
from broker.placement._env import Group
from broker.placement._filter import Kept, OfferKeep

_DICT = attrgetter("__dict__")

FlatKeep = Callable[["Flat", list[int]], list[int]]
"""An offer filter's kept positions of a selection, without reasons."""


class Flat:
    """The snapshot's offers in group order with their field mappings and group positions."""

    __slots__ = ("dicts", "gids", "groups", "offers", "starts", "stops")

    def __init__(self, groups: Sequence[Group]) -> None:
        self.groups = groups
        self.offers: list[Offer] = list(chain.from_iterable(g.offers for g in groups))
        self.dicts: list[dict[str, Any]] = list(map(_DICT, self.offers))
        sizes = [len(g.offers) for g in groups]
        self.gids: list[int] = list(chain.from_iterable(map(repeat, range(len(groups)), sizes)))
        """The group position of each offer."""
        self.stops: list[int] = list(accumulate(sizes))
        self.starts: list[int] = [0, *self.stops[:-1]]

    def select(self, groups: Sequence[Group]) -> list[int]:
        """The positions of every offer of `groups` (groups of this snapshot, in group order)."""
        starts, stops = self.starts, self.stops
        return list(chain.from_iterable(range(starts[g.index], stops[g.index]) for g in groups))

    def column(self, field: str, sel: list[int]) -> list[Any]:
        """One field of the offers at `sel`."""
        return list(map(itemgetter(field), map(self.dicts.__getitem__, sel)))

    def pairs(self, sel: list[int]) -> Kept:
        """The selection as (group, its selected offers) pairs, in group order."""
        offers, groups = self.offers, self.groups
        return [
            (groups[gid], list(map(offers.__getitem__, run)))
            for gid, run in groupby(sel, self.gids.__getitem__)
        ]

    def through(self, step: OfferKeep, sel: list[int]) -> list[int]:
        """A (group, offers) twin applied to a selection: the positions of the offers it keeps."""
        offers, groups = self.offers, self.groups
        runs = {gid: list(run) for gid, run in groupby(sel, self.gids.__getitem__)}
        kept = step([(groups[gid], list(map(offers.__getitem__, run))) for gid, run in runs.items()])
        out: list[int] = []
        for g, members in kept:  # each group's kept offers are a subsequence of its offers
            j, n = 0, len(members)
            for i in runs[g.index]:
                if j < n and offers[i] is members[j]:
                    out.append(i)
                    j += 1
        return out
