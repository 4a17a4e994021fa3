"""Group verdicts without reasons: what a decision asks of the group rules (denied? allowed?).

A plan's live group rules are folded once per site and once per hardware instead of once
per (site, hardware) group:
  * rules decided on the job and tenant alone (and not site-scoped): one verdict for all;
  * rules reading the site but not the hardware (and site-scoped decided ones): per site;
  * rules reading the hardware but not the site: per hardware;
  * rules reading both: per hardware with the site unbound and per site with the hardware
    unbound; only a rule that neither decides (or one CEL must run) runs per group.
Every outcome is read from or written to the plan's memo under the keys `RuleSet.evaluate`
uses, so the reasons an explanation shows later come from the same outcomes.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from functools import partial
from typing import Any, Protocol, TypeVar

from broker.compliance.classes import ValueClasses
from broker.compliance.plan import MATCHED, UNDECIDED, UNMATCHED, Live, Outcome, Plan, without


class Scoped(Protocol):
    """What the fold reads of a compiled rule besides its outcome."""

    @property
    def effect(self) -> str: ...

    @property
    def sites(self) -> frozenset[str] | None: ...


OutcomeOf = Callable[[Live, dict[str, Any], str, "str | None"], Outcome]
"""A live group rule's outcome on one group's variables (site, hardware): `RuleSet._outcome`."""

OfferOutcomeOf = Callable[[Live, dict[str, Any]], Outcome]
"""A live offer rule's outcome on one offer's variables."""


class Located(Protocol):
    """What the fold reads of a group of offers: its site and accelerator names."""

    @property
    def site_id(self) -> str: ...

    @property
    def accelerator(self) -> str | None: ...


G = TypeVar("G", bound=Located)

Folded = tuple[bool, bool, frozenset[int]]
"""(a deny rule matched or failed, an allow rule matched, indexes of the rules left undecided)."""


class Folds:
    """The per-site and per-hardware verdicts of one plan's group rules (built as groups come)."""

    __slots__ = (
        "_allowed",
        "_both",
        "_by_hw",
        "_by_offer",
        "_by_site",
        "_denied",
        "_per_hw",
        "_per_site",
        "_shared",
        "classes",
        "offer_outcome",
        "outcome",
        "plan",
        "rules",
    )

    def __init__(
        self,
        plan: Plan,
        rules: tuple[Scoped, ...],
        outcome: OutcomeOf,
        offer_outcome: OfferOutcomeOf,
        classes: ValueClasses,
    ) -> None:
        self.plan = plan
        self.rules = rules
        self.outcome = outcome
        self.offer_outcome = offer_outcome
        self.classes = classes
        self._shared: dict[tuple[int, int, Hashable], Outcome] = {}
        """(kind, rule, class of the site or accelerator) -> a native outcome: the sites (or
        accelerators) giving a rule the same inputs share one evaluation (`ValueClasses`);
        kind 0: the rule whole, 1: with the hardware unbound, 2: with the site unbound."""
        self._by_offer: dict[tuple[Any, ...], Outcome] = {}
        self._denied = self._allowed = False
        per_site: list[Live] = []
        per_hw: list[Live] = []
        both: list[Live] = []
        for live in plan.group:
            rule = rules[live.index]
            if live.fixed is not None and rule.sites is None:
                self._denied = self._denied or (live.fixed[0] and rule.effect == "deny")
                self._allowed = self._allowed or (live.fixed[0] and rule.effect != "deny")
            elif live.fixed is not None or (live.by_site and not live.by_hardware):
                per_site.append(live)
            elif live.by_hardware and not live.by_site and rule.sites is None:
                per_hw.append(live)
            else:
                both.append(live)
        self._per_site, self._per_hw, self._both = tuple(per_site), tuple(per_hw), tuple(both)
        self._by_site: dict[str, Folded] = {}
        self._by_hw: dict[str | None, Folded] = {}

    def verdict(
        self, site: str, hardware: str | None, variables: Callable[[], dict[str, Any]]
    ) -> tuple[bool, bool]:
        """(denied, allowed) for the group (site, hardware); `allowed` is False for a denied group."""
        values: dict[str, Any] | None = None
        s = self._by_site.get(site)
        if s is None:
            values = variables()
            s = self._by_site[site] = self._fold_site(site, hardware, values)
        h = self._by_hw.get(hardware)
        if h is None:
            values = variables() if values is None else values
            h = self._by_hw[hardware] = self._fold_hardware(site, hardware, values)
        if self._denied or s[0] or h[0]:
            return True, False
        allowed = self._allowed or s[1] or h[1]
        if not (s[2] and h[2]):
            return False, allowed
        left = s[2] & h[2]
        if not left:
            return False, allowed
        lives = tuple(live for live in self._both if live.index in left)
        denied, more = self._fold(lives, site, hardware, variables() if values is None else values)
        return denied, (allowed or more) and not denied

    def keep(self, groups: list[G], variables: Callable[[G], dict[str, Any]], need_allow: bool) -> list[G]:
        """The groups not denied (and allowed, when `need_allow`): `verdict` over many groups,
        read straight from the per-site and per-hardware folds where they decide."""
        by_site, by_hw = self._by_site, self._by_hw
        kept: list[G] = []
        for g in groups:
            s, h = by_site.get(g.site_id), by_hw.get(g.accelerator)
            if s is None or h is None or (s[2] and h[2] and not s[2].isdisjoint(h[2])):
                denied, allowed = self.verdict(g.site_id, g.accelerator, partial(variables, g))
            else:
                denied = self._denied or s[0] or h[0]
                allowed = self._allowed or s[1] or h[1]
            if not denied and (allowed or not need_allow):
                kept.append(g)
        return kept

    def offer_verdict(
        self, site: str, hardware: str | None, projection: Any, variables: Callable[[], dict[str, Any]]
    ) -> tuple[bool, bool]:
        """(denied, allowed) by the offer rules for one offer, given the projection of the offer
        fields they read; each rule runs once per distinct (site, hardware, projection) it reads."""
        allowed = False
        values: dict[str, Any] | None = None
        memo, rules = self._by_offer, self.rules
        for live in self.plan.offer:
            rule = rules[live.index]
            if rule.sites is not None and site not in rule.sites:
                continue
            result = live.fixed
            if result is None:
                key = (
                    live.index,
                    site if live.by_site else None,
                    hardware if live.by_hardware else None,
                    projection,
                )
                result = memo.get(key)
                if result is None:
                    values = variables() if values is None else values
                    result = memo[key] = self.offer_outcome(live, values)
            denied, allowed = _join(rule.effect, result, False, allowed)
            if denied:
                return True, False
        return False, allowed

    def _fold_site(self, site: str, hardware: str | None, values: dict[str, Any]) -> Folded:
        """The site's rules, and the site-and-hardware rules the site alone decides."""
        denied, allowed = self._fold(self._per_site, site, hardware, values)
        left: list[int] = []
        plan, rules = self.plan, self.rules
        unbound: dict[str, Any] | None = None  # the variables without the hardware, built once
        classes = self.classes
        for live in self._both:
            scope = rules[live.index].sites
            if scope is not None and site not in scope:
                continue  # not this site's rule: it decides nothing here
            early = UNDECIDED
            if live.native is not None and live.by_site and live.by_hardware:
                mapping = values["site"]
                known = classes.known.get((live.index, "site", site))  # `classes.of` without its call
                shared = (
                    1,
                    live.index,
                    known[1]
                    if known is not None and known[0] is mapping
                    else classes.of(live.index, "site", site, mapping),
                )
                found = self._shared.get(shared)
                if found is not None:
                    early = found
                else:
                    if unbound is None:
                        unbound = without(values, "hardware")
                    early = self._shared[shared] = plan.site_early(live, live.native, values, site, unbound)
            if early is UNDECIDED:
                left.append(live.index)
            else:
                denied, allowed = _join(rules[live.index].effect, early, denied, allowed)
        return denied, allowed, frozenset(left)

    def _fold_hardware(self, site: str, hardware: str | None, values: dict[str, Any]) -> Folded:
        """The hardware's rules, and the site-and-hardware rules the hardware alone decides."""
        denied, allowed = self._fold(self._per_hw, site, hardware, values)
        left: list[int] = []
        plan, rules = self.plan, self.rules
        unbound: dict[str, Any] | None = None  # the variables without the site, built once
        classes = self.classes
        for live in self._both:
            early = UNDECIDED
            if (
                live.native is not None
                and live.by_site
                and live.by_hardware
                and rules[live.index].sites is None
            ):
                mapping = values["hardware"]
                known = classes.known.get((live.index, "hardware", hardware))  # `classes.of` without its call
                hw_class = (
                    known[1]
                    if known is not None and known[0] is mapping
                    else classes.of(live.index, "hardware", hardware, mapping)
                )
                found = self._shared.get((2, live.index, hw_class))
                if found is not None:
                    early = found
                else:
                    if unbound is None:
                        unbound = without(values, "site")
                    early = self._shared[(2, live.index, hw_class)] = plan.early(
                        live, live.native, values, hardware, unbound
                    )
            if early is UNDECIDED:
                left.append(live.index)
            else:
                denied, allowed = _join(rules[live.index].effect, early, denied, allowed)
        return denied, allowed, frozenset(left)

    def _fold(
        self, lives: tuple[Live, ...], site: str, hardware: str | None, values: dict[str, Any]
    ) -> tuple[bool, bool]:
        """Fold fully evaluated rules (memo keys as `RuleSet._run` writes them)."""
        denied = allowed = False
        memo, rules, classes, kept = self.plan.memo, self.rules, self.classes, self._shared
        for live in lives:
            index = live.index
            rule = rules[index]
            if rule.sites is not None and site not in rule.sites:
                continue
            result = live.fixed
            if result is None:
                by_site = live.by_site
                key = (index, site if by_site else None, hardware if live.by_hardware else None)
                result = memo.get(key)
                if result is None:
                    native = live.native
                    if native is not None and by_site is not live.by_hardware:
                        # what `outcome` does first for such a rule, without its three calls,
                        # once per class of the site (or the accelerator) the rule reads
                        root, name = ("site", site) if by_site else ("hardware", hardware)
                        # `classes.of` without its call when the class is known (the commonest case)
                        known = classes.known.get((index, root, name))
                        mapping = values[root]
                        shared = (
                            0,
                            index,
                            known[1]
                            if known is not None and known[0] is mapping
                            else classes.of(index, root, name, mapping),
                        )
                        result = kept.get(shared)
                        if result is None:
                            hit = native.side(values)
                            result = MATCHED if hit is True else UNMATCHED if hit is False else None
                            if result is not None:
                                kept[shared] = result
                    if result is None:
                        result = self.outcome(live, values, site, hardware)
                    memo[key] = result
            hit_, error = result
            if rule.effect == "deny":  # `_join`, inline
                denied = denied or hit_ or error is not None
            else:
                allowed = allowed or (hit_ and error is None)
        return denied, allowed


def _join(effect: str, outcome: Outcome, denied: bool, allowed: bool) -> tuple[bool, bool]:
    """A deny rule that matched or failed denies (fail closed); an allow rule that matched allows."""
    hit, error = outcome
    if effect == "deny":
        return denied or hit or error is not None, allowed
    return denied, allowed or (hit and error is None)
