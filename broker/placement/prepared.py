"""Prepared offer snapshots: offers grouped and indexed once, reused by many decisions.

`prepare_offers(offers, policy)` freezes a snapshot of offers (a tuple), groups it by
(site, accelerator) in first-seen order, and indexes the groups by every normalized name
a job's `any_of` may use (model, family, aliases), so a decision only touches the groups
whose hardware can fit the job. The snapshot also carries `place()`'s per-snapshot memo
(see `broker.placement.core`). A `PreparedOffers` is a read-only `Sequence[Offer]`.

`place()` calls `snapshot()` on whatever sequence it is given: a `PreparedOffers` built for
the same policy is used as is; a plain sequence seen recently (the same object holding the
very same offer objects, checked by identity) reuses its prepared snapshot; anything else
is prepared on the spot.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from operator import is_
from threading import Lock
from typing import Any, overload

from broker.model import Offer
from broker.placement._env import Group, group_offers
from broker.policy import Policy

MEMO_LIMIT = 4096
"""Entries kept per memo of a snapshot before it is cleared (bounded memory; results stay correct)."""

MEMO_WEIGHT = 100_000
"""Offers (kept or scored) held per memo of a snapshot before it is cleared."""

RECENT = 4
"""Plain offer sequences remembered by identity (the simulator's list, the dispatcher's pass)."""


class PreparedOffers(Sequence[Offer]):
    """An immutable snapshot of offers, grouped and indexed for one policy."""

    __slots__ = (
        "_by_accelerator",
        "_candidates",
        "_positions",
        "_weight",
        "decided",
        "decisions",
        "groups",
        "offers",
        "policy",
        "shapes",
    )

    def __init__(self, offers: Sequence[Offer], policy: Policy) -> None:
        self.offers: tuple[Offer, ...] = tuple(offers)
        self.policy = policy
        self.groups: tuple[Group, ...] = tuple(group_offers(self.offers, policy))
        by_accelerator: dict[str | None, list[int]] = {}
        for i, g in enumerate(self.groups):
            members = by_accelerator.get(g.accelerator)
            if members is None:
                by_accelerator[g.accelerator] = [i]
            else:
                members.append(i)
        self._by_accelerator = by_accelerator
        self._candidates: dict[tuple[bool, frozenset[str]], tuple[Group, ...]] = {}
        self._positions: dict[int, int] | None = None
        self._weight: dict[int, int] = {}
        self.decided = 0
        """Decisions made on this snapshot (`place()` counts them; not a memo)."""
        self.shapes: dict[Hashable, Any] = {}
        """Memo of `place()`: job shape -> groups and offers passing every filter."""
        self.decisions: dict[Hashable, Any] = {}
        """Memo of `place()`: job shape x runtime x voucher state -> scored offers and the choice."""

    def candidates(self, count: int, any_of: frozenset[str]) -> tuple[Group, ...]:
        """Groups whose accelerator model a job needing `count` of `any_of` accepts, in group order.

        Exactly the groups the model part of the hardware filter can keep (memory aside):
        CPU-only groups for a job without accelerators, else the groups carrying one of the
        (normalized) `any_of` names, or every accelerator group when `any_of` is empty.
        """
        key = (count == 0, any_of)
        hit = self._candidates.get(key)
        if hit is None:
            by_acc = self._by_accelerator
            if count == 0:
                idx: Sequence[int] = by_acc.get(None, ())
            else:  # each accelerator's names are looked at once, not once per group
                groups = self.groups
                idx = sorted(
                    i
                    for acc, members in by_acc.items()
                    if acc is not None
                    and (not any_of or not any_of.isdisjoint(groups[members[0]].hw.match_keys))
                    for i in members
                )
            hit = self._candidates[key] = tuple(self.groups[i] for i in idx)
        return hit

    @property
    def positions(self) -> dict[int, int]:
        """id(offer) -> its (last) index in the snapshot; orders the rejected offers."""
        if self._positions is None:
            self._positions = {id(o): i for i, o in enumerate(self.offers)}
        return self._positions

    def remember(self, memo: dict[Hashable, Any], key: Hashable, value: Any, weight: int) -> None:
        """Store `value` (holding `weight` offers) in a memo of this snapshot, clearing it first when full."""
        if len(memo) >= MEMO_LIMIT:
            memo.clear()
            self._weight[id(memo)] = 0
        self.charge(memo, weight)
        memo[key] = value

    def charge(self, memo: dict[Hashable, Any], weight: int) -> None:
        """Count `weight` more offers held by `memo`; clear it when over `MEMO_WEIGHT`."""
        held = self._weight.get(id(memo), 0) + weight
        if held > MEMO_WEIGHT:
            memo.clear()
            held = weight
        self._weight[id(memo)] = held

    def clear(self) -> None:
        """Forget every memo a job filled (the grouping, the index and the groups' parts stay)."""
        self._candidates.clear()
        self.shapes.clear()
        self.decisions.clear()
        self._weight.clear()

    def forget_parts(self) -> None:
        """Drop what decisions derived on the groups' parts (`Part.forget`; benchmarks of a first
        decision): the grouping and each part's per-offer values stay."""
        for g in self.groups:
            g.forget()

    # -- Sequence[Offer] --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.offers)

    @overload
    def __getitem__(self, index: int) -> Offer: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[Offer, ...]: ...

    def __getitem__(self, index: int | slice) -> Offer | tuple[Offer, ...]:
        return self.offers[index]

    def __iter__(self) -> Iterator[Offer]:
        return iter(self.offers)

    def __repr__(self) -> str:
        return (
            f"PreparedOffers({len(self.offers)} offers, {len(self.groups)} groups, {self.policy.hash[:12]})"
        )


def prepare_offers(offers: Sequence[Offer], policy: Policy) -> PreparedOffers:
    """Group and index `offers` once for `policy`; pass the result to `place()` for many decisions."""
    if isinstance(offers, PreparedOffers):
        offers = offers.offers
    return PreparedOffers(offers, policy)


_recent: list[tuple[Sequence[Offer], PreparedOffers]] = []
_lock = Lock()


def _unchanged(offers: Sequence[Offer], prepared: PreparedOffers) -> bool:
    snap = prepared.offers
    if offers is snap:
        return True
    return len(offers) == len(snap) and all(map(is_, offers, snap))


def snapshot(offers: Sequence[Offer], policy: Policy) -> PreparedOffers:
    """The prepared form of `offers` for `policy`, reused when the same offers come again."""
    if type(offers) is PreparedOffers:
        if offers.policy is policy:
            return offers
        offers = offers.offers
    with _lock:
        recent = list(_recent)
    for i, (seq, prepared) in enumerate(recent):
        if seq is offers and prepared.policy is policy and _unchanged(offers, prepared):
            if i:  # most recently used first
                with _lock:
                    _recent[:] = [(seq, prepared), *(e for e in _recent if e[1] is not prepared)]
            return prepared
    prepared = PreparedOffers(offers, policy)
    with _lock:
        _recent.insert(0, (offers, prepared))
        del _recent[RECENT:]
    return prepared


def forget_snapshots() -> None:
    """Drop the snapshots remembered by identity (tests, benchmarks, memory)."""
    with _lock:
        _recent.clear()
