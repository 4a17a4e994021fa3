"""Ranking: the policy's explicit tie-break chain, ending in the offer key (a total order).

Like cluster-autoscaler's expander chain, each ranker only decides among offers the earlier
ones left tied; here the chain is one lexicographic sort key. Floats are rounded (to 1e-6
of the currency) before comparison so ties are exact and deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from broker.placement.types import ScoredOffer

Q = 6
"""Decimal places kept when comparing terms (ties are exact and deterministic)."""


def _term(name: str) -> Callable[[ScoredOffer], Any]:
    return lambda s: round(s.terms.get(name, 0.0), Q)


RANKERS: dict[str, Callable[[ScoredOffer], Any]] = {
    "score": lambda s: round(s.score, Q),
    "cost": lambda s: round(s.terms.get("cost", 0.0) + s.terms.get("voucher", 0.0), Q),
    "wait": _term("wait"),
    "carbon": _term("carbon"),
    "preference": _term("preference"),
    "free": lambda s: -(s.offer.free or 0),
    "site": lambda s: s.offer.site,
    "offer": lambda s: s.offer.key,
}


def full_chain(chain: Sequence[str]) -> list[str]:
    """The chain with the offer key last (a total order)."""
    names = list(chain)
    if "offer" not in names:
        names.append("offer")
    return names


def sort_key(chain: Sequence[str]) -> Callable[[ScoredOffer], tuple[Any, ...]]:
    """The lexicographic key of a chain (validated at policy load)."""
    keys = [RANKERS[n] for n in full_chain(chain)]
    return lambda s: tuple(k(s) for k in keys)


def rank(scored: list[ScoredOffer], chain: Sequence[str]) -> list[ScoredOffer]:
    """Allowed offers sorted best-first by the chain."""
    return sorted(scored, key=sort_key(chain))


def best(scored: list[ScoredOffer], chain: Sequence[str]) -> ScoredOffer | None:
    """The first offer of `rank(scored, chain)` in O(n), without building every key."""
    if not scored:
        return None
    names = full_chain(chain)
    if names[0] == "score":  # narrow to the exact-score ties first: cheap floats, no offer keys
        low = min(s.score for s in scored)
        top = round(low, Q)
        scored = [s for s in scored if s.score <= low + 1e-5 and round(s.score, Q) == top]
        if len(scored) == 1:
            return scored[0]
    return min(scored, key=sort_key(names))
