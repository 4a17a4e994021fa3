"""A group's offers of one market with the per-offer values every decision reads, built once.

The catalog is the same across decisions (a snapshot is prepared once per offer list and
policy): what a decision reads of each offer that does not depend on the job (its price per
hour in the policy currency, its `wait` term, its accelerator count, the smallest sizes the
size test can reject on) is computed once per group and market and kept with the snapshot.
A decision then keeps a whole part when its smallest sizes fit the job (no per-offer test)
and its scores gather the part's columns instead of reading each offer again.

A `Part` is a list of offers (what the filters pass along), so any filter that keeps every
offer hands the same object on; one that builds a new list loses the columns and the
scorers read the offers' fields again (same floats either way: same operations).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Hashable, Iterable
from functools import partial
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from broker.model import Offer
from broker.policy import Policy

if TYPE_CHECKING:
    from broker.placement.vector import Floats

Classes = tuple[tuple[Any, list[int]], ...]
"""Distinct values of an offer projection, each with the indexes of the offers giving it (`Part.classes`)."""

KEPT_LIMIT = 16
"""Projections (and classes' offers) a part keeps before it computes them again (bounded memory)."""

Scoring = tuple[float, float, float, float]
"""What the carbon and preference terms read of an offer's group (`Group.scoring`)."""


class Part(list[Offer]):
    """Offers with their field mappings and the job-independent values scoring reads."""

    __slots__ = (
        "_array",
        "_cells",
        "_classes",
        "_keeping",
        "_source",
        "_steps",
        "counts",
        "currencies",
        "fields",
        "hourly",
        "kept",
        "min_count",
        "min_cpus",
        "min_memory",
        "scoring",
        "waits",
    )

    def __init__(
        self,
        offers: Iterable[Offer],
        fields: list[dict[str, Any]],
        hourly: list[float],
        waits: list[float],
        counts: list[int],
        currencies: frozenset[str],
        scoring: Scoring,
    ) -> None:
        super().__init__(offers)
        self.fields = fields
        self.hourly = hourly
        """Price per hour in the policy currency (0 without a rate), as `PerHour` computes it."""
        self.waits = waits
        self.counts = counts
        self.currencies = currencies
        """The offers' currencies (a subset's may name more: only "all have a rate" is asked)."""
        self.scoring = scoring
        """The group's carbon and preference values (`Group.scoring`)."""
        self._array: Floats | None = None
        self._source: tuple[Part, list[int]] | None = None
        """For a subset: the whole part and the indexes picked (its array's rows are those)."""
        self._classes: dict[Hashable, Classes] | None = None
        self._keeping: dict[tuple[Hashable, int], Part] | None = None
        """A kept part's offers by projection, and each class's offers (`classes`, `keeping`)."""
        self._cells: dict[float, Part] | None = None
        self._steps: list[float] | None = None
        """The offers of at least each count (`at_least`), and the distinct counts, ascending."""
        self.kept = False
        """Kept with the snapshot (a market part, or a cell of one no job decides): what is
        computed on it is kept with it; a subset built for one decision is not."""
        self.min_count: float = -math.inf  # a subset is not size-tested again: never "fits"
        self.min_cpus: float = -math.inf
        self.min_memory: float = -math.inf

    @property
    def whole(self) -> bool:
        """A group's market part itself (kept with the snapshot), not a subset of one."""
        return self._source is None

    def fits(self, count: int, cpus: float, memory_gb: float) -> bool:
        """Every offer passes the size test for this job (False: test each offer)."""
        return self.min_count >= count and self.min_cpus >= cpus and self.min_memory >= memory_gb

    def array(self) -> Floats:
        """The offers' scoring values as one 7 x n float64 array (`vector.stack`), made once."""
        found = self._array
        if found is None:
            if self._source is not None:  # a subset: rows of the whole part's (made once per snapshot)
                whole, picked = self._source
                found = whole.array()[:, picked]
            else:
                import broker.placement.vector as vector  # numpy loads with a decision, not the CLI

                found = vector.stack(self.hourly, self.waits, self.counts, [self.scoring], [len(self)])
            self._array = found
        return found

    def at_least(self, count: int) -> Part:
        """The offers whose accelerator count is not below `count` (a NaN count passes, as in the
        size test), in input order: a cell of the partition by count, kept with the part; jobs
        whose count no offer's count lies between share it."""
        steps = self._steps
        if steps is None:
            steps = self._steps = sorted({c for c in self.counts if c == c})
        i = bisect_left(steps, count)
        key = steps[i] if i < len(steps) else math.inf
        cells = self._cells
        if cells is None:
            cells = self._cells = {}
        found = cells.get(key)
        if found is None:
            found = cells[key] = self.subset([i for i, c in enumerate(self.counts) if not c < count])
            found.kept = True
        return found

    def forget(self) -> None:
        """Drop what decisions derived here: the classes by rule reads, their cells and the cells by
        count (benchmarks of a first decision; results unchanged). The columns stay."""
        self._classes = self._keeping = self._cells = None

    def classes(self, reads: Hashable, project: Callable[[Offer], Any]) -> Classes:
        """The distinct values `project` gives over the offers (first seen first), each with the
        indexes of the offers giving it, kept per `reads`: what `project`'s values depend on
        besides the offer (the offer fields a policy's rules read)."""
        kept = self._classes
        if kept is None:
            kept = self._classes = {}
        found = kept.get(reads)
        if found is None:
            by: dict[Any, list[int]] = {}
            for i, o in enumerate(self):
                by.setdefault(project(o), []).append(i)
            if len(kept) >= KEPT_LIMIT:
                kept.clear()
            found = kept[reads] = tuple(by.items())
        return found

    def keeping(self, reads: Hashable, classes: Classes, marked: tuple[bool, ...]) -> Part:
        """The offers whose class (`classes(reads, ...)`) is marked, in input order. The offers of
        one class are a cell of a partition no job decides (like a market part: the offers with
        these values of the fields the rules read), kept with the part; a union of several
        cells, which a decision's verdicts pick, is built for the decision."""
        if marked.count(True) != 1:
            return self.subset(
                sorted(i for mark, (_, at) in zip(marked, classes, strict=True) if mark for i in at)
            )
        kept = self._keeping
        if kept is None:
            kept = self._keeping = {}
        key = (reads, marked.index(True))
        found = kept.get(key)
        if found is None:
            if len(kept) >= KEPT_LIMIT:
                kept.clear()
            found = kept[key] = self.subset(classes[key[1]][1])
            found.kept = True
        return found

    def subset(self, picked: list[int]) -> Part:
        """The offers at the indexes `picked` (ascending), with their values (one C-level gather
        per column: a comprehension costs more than the few offers a group holds)."""
        # (itemgetter of one index gives the item, not a 1-tuple)
        get: Callable[[list[Any]], Any] = itemgetter(*picked) if len(picked) > 1 else partial(_at, picked)
        part = Part(
            get(self),
            list(get(self.fields)),
            list(get(self.hourly)),
            list(get(self.waits)),
            list(get(self.counts)),
            self.currencies,
            self.scoring,
        )
        source = self._source  # a subset of a subset: its rows are the whole part's at these indexes
        part._source = (self, picked) if source is None else (source[0], [source[1][i] for i in picked])
        return part


def _at(picked: list[int], values: list[Any]) -> list[Any]:
    return [values[i] for i in picked]


def build_part(
    offers: list[Offer], fields: list[dict[str, Any]], policy: Policy, scoring: Scoring = (0.0, 0.0, 0.0, 0.0)
) -> Part:
    """`offers` (with their field mappings) as a part: the values computed as `PerHour` does;
    `scoring`: their group's carbon and preference values."""
    cur, rate = policy.currency, policy.rate
    currencies = frozenset({d["currency"] for d in fields})
    rates = {c: rate(c or cur) or 0.0 for c in currencies}
    per_second = policy.objective.wait_hour_cost / 3600.0
    return Part(
        offers,
        fields,
        [d["price_per_hour"] * rates[d["currency"]] for d in fields],
        [d["expected_wait_s"] * per_second for d in fields] if per_second else [0.0] * len(fields),
        [d["count"] for d in fields],
        currencies,
        scoring,
    )


def market_part(
    offers: list[Offer], fields: list[dict[str, Any]], spot: bool | None, policy: Policy, scoring: Scoring
) -> Part:
    """The offers of one market (`spot` True or False) or all of them (None), in input order,
    with the smallest sizes the size test can reject on (a NaN never rejects, nor does an
    unknown, zero, CPU or memory size)."""
    if spot is not None:
        picked = [i for i, d in enumerate(fields) if d["spot"] is spot]
        offers, fields = [offers[i] for i in picked], [fields[i] for i in picked]
    part = build_part(offers, fields, policy, scoring)
    part.min_count = min((c for c in part.counts if c == c), default=math.inf)
    part.min_cpus = min((c for d in fields if (c := d["cpus"]) and c == c), default=math.inf)
    part.min_memory = min((m for d in fields if (m := d["memory_gb"]) and m == m), default=math.inf)
    part.kept = True
    return part
