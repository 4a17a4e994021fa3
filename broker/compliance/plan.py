"""Per-decision rule plans: rules partially evaluated on the job and the tenant first.

A plan is built once per (tenant, job projection). Each rule in the tenant's scope is run
natively (see `broker.compliance.native`) with only `job` and `tenant` bound:
  * false: the rule cannot match any site, hardware or offer (CEL's `&&` absorbs errors,
    so no later field can turn it into an error either) and is dropped;
  * true: its outcome is fixed for every group;
  * undecided: it stays, evaluated once per distinct site and/or hardware it reads
    (the site id and accelerator name stand for the fields: both map to one mapping).
Rules without a native form, and inputs the native form cannot decide, run on CEL.

A rule reading both the site and the hardware is first run with one of them unbound (once
per hardware, then once per site): when that decides it, the other cannot change it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from broker.compliance._native_ops import Side
from broker.compliance.native import FALLBACK, UNKNOWN, Native

Outcome = tuple[bool, str | None]
"""(matched, error message); a rule that could not be evaluated has matched False."""


@dataclass(frozen=True, slots=True)
class Live:
    """A rule still undecided (or decided true) for one (tenant, job)."""

    index: int
    """Position in the rule set (orders the denials)."""
    fixed: Outcome | None
    """The outcome for every group, when the job and the tenant decide it."""
    native: Native | None
    by_site: bool
    by_hardware: bool


MATCHED: Outcome = (True, None)
UNMATCHED: Outcome = (False, None)
"""The two error-free outcomes, shared (memos hold one of them per rule and site or hardware)."""


def live_rule(index: int, native: Native | None, bound: Mapping[str, Any]) -> Live | None:
    """How rule `index` stands once `bound` (job, tenant) is known; None when it cannot match."""
    roots = native.roots if native is not None else frozenset({"site", "hardware", "offer"})
    by_site, by_hw = "site" in roots, "hardware" in roots
    if native is None:
        return Live(index, None, None, True, True)
    hit = native.side(bound)
    if hit is UNKNOWN:
        return Live(index, None, native, by_site, by_hw)
    if hit is FALLBACK:  # CEL decides (and words any error), per group
        return Live(index, None, None, True, True)
    if not hit:
        return None
    return Live(index, MATCHED, native, by_site, by_hw)


class Standings:
    """`live_rule`'s values for every rule of a rule set, made once: a plan is built from them
    (interned) and each rule's native form is run once on the job and tenant."""

    __slots__ = ("_rows",)

    def __init__(
        self,
        natives: tuple[Native | None, ...],
        tenants: tuple[frozenset[str] | None, ...],
        reads_offer: tuple[bool, ...],
    ) -> None:
        rows: list[tuple[int, frozenset[str] | None, bool, Side | None, Live, Live, Live]] = []
        for i, (native, scope, offer) in enumerate(zip(natives, tenants, reads_offer, strict=True)):
            on_cel = Live(i, None, None, True, True)
            if native is None:
                rows.append((i, scope, offer, None, on_cel, on_cel, on_cel))
                continue
            by_site, by_hw = "site" in native.roots, "hardware" in native.roots
            undecided = Live(i, None, native, by_site, by_hw)
            matched = Live(i, MATCHED, native, by_site, by_hw)
            rows.append((i, scope, offer, native.side, undecided, on_cel, matched))
        self._rows = tuple(rows)

    def stand(
        self, tenant: str, bound: Mapping[str, Any]
    ) -> tuple[tuple[Live, ...], tuple[Live, ...], tuple[int, ...]]:
        """The live group rules and offer rules of `tenant`'s scope once `bound` (job, tenant) is
        known, as `live_rule` gives them, and a signature naming them (3 x index + standing)."""
        group: list[Live] = []
        offer: list[Live] = []
        signature: list[int] = []
        for i, scope, reads_offer, side, undecided, on_cel, matched in self._rows:
            if scope is not None and tenant not in scope:
                continue
            if side is None:
                live, code = on_cel, 1
            else:
                hit = side(bound)
                if hit is UNKNOWN:
                    live, code = undecided, 0
                elif hit is FALLBACK:  # CEL decides (and words any error), per group
                    live, code = on_cel, 1
                elif hit:
                    live, code = matched, 2
                else:
                    continue
            (offer if reads_offer else group).append(live)
            signature.append(3 * i + code)
        return tuple(group), tuple(offer), tuple(signature)


def run_native(native: Native | None, variables: Mapping[str, Any]) -> Outcome | None:
    """The native outcome on fully bound variables, or None when CEL must decide."""
    if native is None:
        return None
    hit = native.side(variables)
    if hit is True or hit is False:
        return MATCHED if hit else UNMATCHED
    return None


UNDECIDED: Outcome = (False, "undecided")
"""A partial outcome that depends on the variables not bound yet."""


def without(variables: Mapping[str, Any], unbound: str) -> dict[str, Any]:
    """`variables` with `unbound` left out (in their order)."""
    out = dict(variables)
    out.pop(unbound, None)
    return out


def decided_without(
    native: Native, variables: Mapping[str, Any], unbound: str, reduced: Mapping[str, Any] | None = None
) -> Outcome:
    """The outcome with `unbound` left out (`UNDECIDED` when it matters or CEL must decide);
    `reduced` is `without(variables, unbound)` when the caller has it already."""
    hit = native.side(without(variables, unbound) if reduced is None else reduced)
    if hit is True or hit is False:
        return MATCHED if hit else UNMATCHED
    return UNDECIDED


class Plan:
    """The live group and offer rules of one (tenant, job), with a memo of their outcomes."""

    __slots__ = ("group", "memo", "offer")

    def __init__(self, group: tuple[Live, ...], offer: tuple[Live, ...]) -> None:
        self.group = group
        self.offer = offer
        self.memo: dict[tuple[int, str | None, str | None], Outcome] = {}

    def early(
        self,
        live: Live,
        native: Native,
        values: Mapping[str, Any],
        hardware: str | None,
        reduced: Mapping[str, Any] | None = None,
    ) -> Outcome:
        """A site-and-hardware rule's outcome with the site unbound (memoized per hardware)."""
        key = (live.index, None, hardware)  # never a full-evaluation key of this rule
        early = self.memo.get(key)
        if early is None:
            early = self.memo[key] = decided_without(native, values, "site", reduced)
        return early

    def site_early(
        self,
        live: Live,
        native: Native,
        values: Mapping[str, Any],
        site: str,
        reduced: Mapping[str, Any] | None = None,
    ) -> Outcome:
        """A site-and-hardware rule's outcome with the hardware unbound (memoized per site)."""
        key = (~live.index, site, None)  # a negative index: never a full-evaluation key
        early = self.memo.get(key)
        if early is None:
            early = self.memo[key] = decided_without(native, values, "hardware", reduced)
        return early

    def outcome(
        self, live: Live, values: Mapping[str, Any], site: str, hardware: str | None
    ) -> Outcome | None:
        """A site-and-hardware rule's outcome when the hardware or the site alone decides it."""
        native = live.native
        if native is None or not (live.by_site and live.by_hardware):
            return None
        early = self.early(live, native, values, hardware)
        if early is UNDECIDED:
            early = self.site_early(live, native, values, site)
        return None if early is UNDECIDED else early
