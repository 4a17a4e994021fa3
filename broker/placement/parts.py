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
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from broker.model import Offer
from broker.policy import Policy

if TYPE_CHECKING:
    from broker.placement.vector import Floats

Scoring = tuple[float, float, float, float]
"""What the carbon and preference terms read of an offer's group (`Group.scoring`)."""


class Part(list[Offer]):
    """Offers with their field mappings and the job-independent values scoring reads."""

    __slots__ = (
        "_array",
        "_source",
        "counts",
        "currencies",
        "fields",
        "hourly",
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
        self.min_count: float = -math.inf  # a subset is not size-tested again: never "fits"
        self.min_cpus: float = -math.inf
        self.min_memory: float = -math.inf

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

    def subset(self, picked: list[int]) -> Part:
        """The offers at the indexes `picked` (ascending), with their values (C-level gathers:
        a list comprehension per column costs more than the few offers a group holds)."""
        part = Part(
            map(self.__getitem__, picked),
            list(map(self.fields.__getitem__, picked)),
            list(map(self.hourly.__getitem__, picked)),
            list(map(self.waits.__getitem__, picked)),
            list(map(self.counts.__getitem__, picked)),
            self.currencies,
            self.scoring,
        )
        part._source = (self, picked)
        return part


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
    return part
