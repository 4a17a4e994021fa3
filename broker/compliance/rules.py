"""Operator rules compiled once at load, evaluated per distinct combination, memoized.

Each rule is also run at most once per distinct tuple of the values it reads (its own
memo, in a context holding only those values): building a full CEL context per group
was most of an uncached decision, and most rules read a field or two.

A rule's verdict depends only on the fields it reads. The memo key of a (site, hardware,
tenant, job) group is therefore the ids plus the job's projection onto the job fields any
rule reads: two jobs that differ only elsewhere share every verdict. Rules that read
`offer` are evaluated per distinct projection of the offer fields they read.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import cel

from broker.compliance.celenv import VARIABLES, Path, lookup
from broker.compliance.classes import ValueClasses
from broker.compliance.native import compile_native
from broker.compliance.plan import Live, Outcome, Plan, Standings, run_native
from broker.compliance.values import at, execute, freeze
from broker.compliance.verdict import Folds, G

MEMO_LIMIT = 200_000
"""Entries kept before the memo is cleared (bounded memory; results stay correct)."""

FROZEN_LIMIT = 4096
"""Variable mappings whose frozen fields are kept (each is pinned alive while kept)."""

PLACEHOLDERS = frozenset(
    {"site", "tenant", "accelerator", "class", "region", "country", "operator_country", "rule", "zone"}
    | {"site_zone", "tenant_group", "instance_type"}
)


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A validated rule: its CEL program and what it reads."""

    id: str
    effect: str
    """`deny` or `allow`."""
    source: str
    program: cel.Program
    reason: str
    paths: tuple[Path, ...]
    sites: frozenset[str] | None
    tenants: frozenset[str] | None

    @property
    def uses_offer(self) -> bool:
        return any(p[0] == "offer" for p in self.paths)

    def in_scope(self, site: str, tenant: str) -> bool:
        return (self.sites is None or site in self.sites) and (self.tenants is None or tenant in self.tenants)


def template_fields(reason: str) -> list[str]:
    """Placeholder names used in a reason template; raises ValueError when malformed."""
    return [name for _, name, _, _ in string.Formatter().parse(reason) if name is not None]


def render(reason: str, values: Mapping[str, str]) -> str:
    """Fill a reason template (validated at load, so missing keys do not happen)."""
    return reason.format_map(_Default(values))


class _Default(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


Verdict = tuple[tuple[tuple[str, str], ...], bool]
"""((rule id, message) of every deny rule that matched, whether an allow rule matched)."""

_RESIDENCY = ("job", "data_residency")
"""What a reason's `{zone}` says (the job's data zone)."""

DEFAULT_DENY = ("compliance.default", "no allow rule matched and compliance.default is deny")


class RuleSet:
    """All operator rules of a policy with their memo; evaluation is pure (a cache only).

    `fast` (the default) plans each (tenant, job) natively first (`broker.compliance.plan`);
    with `fast = False` every rule in scope runs on CEL over the full variables, unmemoized:
    the plain path the fast one is checked against.
    """

    def __init__(self, rules: tuple[CompiledRule, ...], *, default_deny: bool) -> None:
        self.rules = rules
        self.default_deny = default_deny
        self.fast = True
        self.group_rules = tuple(r for r in rules if not r.uses_offer)
        self.offer_rules = tuple(r for r in rules if r.uses_offer)
        self.natives = tuple(compile_native(r.source) for r in rules)
        self._standings = Standings(
            self.natives, tuple(r.tenants for r in rules), tuple(r.uses_offer for r in rules)
        )
        self.classes = ValueClasses(rules)  # compiled with the rules: `clear()` keeps them
        # A verdict's messages are kept with it: the inputs of the reason templates count as read.
        said = {name for r in rules for name in template_fields(r.reason)}
        job = {p for r in rules for p in r.paths if p[0] == "job"}
        self.job_paths = tuple(sorted(job | ({_RESIDENCY} if "zone" in said else set())))
        offer = {p for r in self.offer_rules for p in r.paths if p[0] == "offer"}
        if ("offer",) in offer:  # the whole offer is read (`offer["spot"]`): every field counts
            offer = {("offer", name) for name in VARIABLES["offer"]}
        elif "instance_type" in said and self.offer_rules:
            offer.add(("offer", "instance_type"))
        self.offer_paths = tuple(sorted(offer))
        self._memo: dict[tuple[Any, ...], Verdict] = {}
        self._rule_memo: dict[tuple[Any, ...], tuple[bool, str | None]] = {}
        self._plans: dict[tuple[Any, ...], Plan] = {}
        self._shared: dict[tuple[Any, ...], Plan] = {}
        self._fold_of: dict[int, Folds] = {}
        """id of a plan -> its per-site and per-hardware verdicts (kept here, not on the plan: a
        plan and its folds referring to each other would leave cyclic garbage when dropped)."""
        self._job_index = tuple(
            tuple(self.job_paths.index(p) for p in r.paths if p[0] == "job") for r in rules
        )
        """Per rule, the positions in `job_paths` (and so in a job fingerprint) of the job fields it reads."""
        # id of a variable's mapping -> (the mapping, kept alive so the id stays its own;
        # frozen value per path read from it): the site, tenant and hardware mappings are
        # shared by every group, so each field is frozen once, not once per group and rule.
        self._frozen: dict[int, tuple[Any, dict[Path, Any]]] = {}
        self._paths_under: dict[str, tuple[Path, ...]] = {}
        for path in dict.fromkeys(p for r in rules for p in r.paths):
            self._paths_under[path[0]] = (*self._paths_under.get(path[0], ()), path)

    def clear(self) -> None:
        """Forget every memoized verdict and plan (benchmarks of the uncached path; results unchanged)."""
        self._memo.clear()
        self._rule_memo.clear()
        self._plans.clear()
        self._shared.clear()
        self._fold_of.clear()
        self._frozen.clear()

    def _fields(self, name: str, root: Any) -> dict[Path, Any]:
        """Frozen values of every path any rule reads under variable `name`, once per mapping."""
        entry = self._frozen.get(id(root))
        if entry is not None and entry[0] is root:
            return entry[1]
        if len(self._frozen) >= FROZEN_LIMIT:
            self._frozen.clear()
        fields: dict[Path, Any] = {}
        for path in self._paths_under.get(name, ()):
            try:
                fields[path] = freeze(at(root, path[1:]))
            except (KeyError, TypeError, IndexError):
                pass  # absent: rules reading it run on the full context
        self._frozen[id(root)] = (root, fields)
        return fields

    def __len__(self) -> int:
        return len(self.rules)

    def job_fingerprint(self, job: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(freeze(at(job, p[1:])) for p in self.job_paths)  # `job` whole holds dicts

    def offer_fingerprint(self, offer: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(lookup(offer, p[1:]) for p in self.offer_paths)

    def plan(
        self,
        tenant: str,
        fp: tuple[Any, ...],
        job: Callable[[], Mapping[str, Any]],
        tenant_vars: Callable[[], Mapping[str, Any]],
    ) -> Plan:
        """The rules still live for `tenant` and a job of projection `fp` (memoized)."""
        key = (tenant, fp)
        plan = self._plans.get(key)
        if plan is None:
            group, offer, signature = self._standings.stand(tenant, {"job": job(), "tenant": tenant_vars()})
            plan = self._shared_plan(tenant, fp, group, offer, signature)
            if len(self._plans) >= FROZEN_LIMIT:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def _shared_plan(
        self,
        tenant: str,
        fp: tuple[Any, ...],
        group: tuple[Live, ...],
        offer: tuple[Live, ...],
        signature: tuple[int, ...],
    ) -> Plan:
        """One plan (and memo) for every job whose live rules (named by `signature`) and the job
        fields they still read agree: jobs differing only in fields the plan decided share verdicts."""
        read = sorted(
            {j for live in (*group, *offer) if live.fixed is None for j in self._job_index[live.index]}
        )
        key = (tenant, signature, tuple(fp[j] for j in read))
        plan = self._shared.get(key)
        if plan is None:
            if len(self._shared) >= FROZEN_LIMIT:
                self._shared.clear()
            plan = self._shared[key] = Plan(group, offer)
        return plan

    def evaluate(
        self,
        key: tuple[Any, ...],
        variables: Callable[[], dict[str, Any]],
        site: str,
        tenant: str,
        labels: Callable[[], Mapping[str, str]],
        *,
        offer: bool,
        plan: Plan,
        hardware: str | None,
    ) -> Verdict:
        """Verdict of the group rules (`offer=False`) or of the rules reading `offer`, memoized by `key`."""
        if not self.fast:
            return self._run_plain(
                self.offer_rules if offer else self.group_rules, variables(), site, tenant, labels
            )
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        lives = plan.offer if offer else plan.group
        verdict = self._run(lives, plan, variables, site, hardware, labels, offer)
        if len(self._memo) >= MEMO_LIMIT:
            self._memo.clear()
        self._memo[key] = verdict
        return verdict

    def _run(
        self,
        lives: tuple[Live, ...],
        plan: Plan,
        variables: Callable[[], dict[str, Any]],
        site: str,
        hardware: str | None,
        labels: Callable[[], Mapping[str, str]],
        offer: bool,
    ) -> Verdict:
        denials: list[tuple[str, str]] = []
        allowed = False
        memo = plan.memo
        values: dict[str, Any] | None = None
        for live in lives:
            rule = self.rules[live.index]
            if rule.sites is not None and site not in rule.sites:
                continue
            outcome = live.fixed
            if outcome is None:
                mkey = (
                    None
                    if offer
                    else (live.index, site if live.by_site else None, hardware if live.by_hardware else None)
                )
                outcome = memo.get(mkey) if mkey is not None else None
                if outcome is None:
                    if values is None:
                        values = variables()
                    outcome = self._outcome(live, rule, plan, values, site, hardware, offer)
                    if mkey is not None:
                        memo[mkey] = outcome
            hit, error = outcome
            if error is not None:  # a rule that cannot be evaluated fails closed
                if rule.effect == "deny":
                    denials.append((rule.id, error))
            elif hit:
                if rule.effect == "deny":
                    denials.append((rule.id, render(rule.reason, {**labels(), "rule": rule.id})))
                else:
                    allowed = True
        return tuple(denials), allowed

    def _outcome(
        self,
        live: Live,
        rule: CompiledRule,
        plan: Plan,
        values: dict[str, Any],
        site: str,
        hardware: str | None,
        offer: bool,
    ) -> Outcome:
        """A live rule's outcome: decided by the hardware or the site alone if it reads both, else
        native, else CEL."""
        if not offer:
            early = plan.outcome(live, values, site, hardware)
            if early is not None:
                return early
        return run_native(live.native, values) or self._cel(rule, values)

    def group_verdict(
        self,
        plan: Plan,
        site: str,
        tenant: str,
        hardware: str | None,
        variables: Callable[[], dict[str, Any]],
    ) -> tuple[bool, bool]:
        """(denied, allowed) by the group rules, as `evaluate(offer=False)` decides, without reasons.

        `allowed` is False for a denied group (the decision does not need it there)."""
        if not self.fast:
            denials, allowed = self._run_plain(self.group_rules, variables(), site, tenant, dict)
            return bool(denials), allowed and not denials
        return self._folds(plan).verdict(site, hardware, variables)

    def keep_groups(
        self, plan: Plan, groups: list[G], variables: Callable[[G], dict[str, Any]], need_allow: bool
    ) -> list[G]:
        """The groups `group_verdict` neither denies nor (if `need_allow`) leaves unallowed; needs `fast`."""
        return self._folds(plan).keep(groups, variables, need_allow)

    def offer_verdict(
        self,
        plan: Plan,
        site: str,
        hardware: str | None,
        projection: Any,
        variables: Callable[[], dict[str, Any]],
    ) -> tuple[bool, bool]:
        """(denied, allowed) by the offer rules for an offer of `projection` (`offer_fingerprint`
        fields), as `evaluate(offer=True)` decides, without reasons; needs `fast`."""
        return self._folds(plan).offer_verdict(site, hardware, projection, variables)

    def folds(self, plan: Plan) -> Folds:
        """The plan's per-site, per-hardware and per-offer-projection verdicts (`offer_verdict` and
        the others read them): a caller asking many verdicts of one plan reads them once; needs `fast`."""
        return self._folds(plan)

    def _folds(self, plan: Plan) -> Folds:
        folds = self._fold_of.get(id(plan))
        if folds is None or folds.plan is not plan:  # (a kept entry pins its plan: ids stay unique)
            if len(self._fold_of) >= FROZEN_LIMIT:
                self._fold_of.clear()
            rules = self.rules
            folds = self._fold_of[id(plan)] = Folds(
                plan,
                rules,
                lambda live, values, s, hw: self._outcome(
                    live, rules[live.index], plan, values, s, hw, False
                ),
                lambda live, values: run_native(live.native, values) or self._cel(rules[live.index], values),
                self.classes,
            )
        return folds

    def _cel(self, rule: CompiledRule, variables: dict[str, Any]) -> Outcome:
        """The CEL outcome of one rule, memoized per distinct tuple of the values it reads."""
        memo = self._rule_memo
        if len(memo) >= MEMO_LIMIT:
            memo.clear()
        try:
            key: tuple[Any, ...] | None = (
                rule.id,
                *[self._fields(p[0], variables[p[0]])[p] for p in rule.paths],
            )
        except KeyError:  # a path not in the variables: run on the full context
            key = None
        outcome = memo.get(key) if key is not None else None
        if outcome is None:
            outcome = execute(rule.program, rule.paths, variables, key is not None)
            if key is not None:
                memo[key] = outcome
        return outcome

    def _run_plain(
        self,
        rules: tuple[CompiledRule, ...],
        variables: dict[str, Any],
        site: str,
        tenant: str,
        labels: Callable[[], Mapping[str, str]],
    ) -> Verdict:
        """Every rule in scope on CEL over the full variables: the reference the fast path must equal."""
        denials: list[tuple[str, str]] = []
        allowed = False
        for rule in rules:
            if not rule.in_scope(site, tenant):
                continue
            hit, error = execute(rule.program, rule.paths, variables, False)
            if error is not None:
                if rule.effect == "deny":
                    denials.append((rule.id, error))
            elif hit and rule.effect == "deny":
                denials.append((rule.id, render(rule.reason, {**labels(), "rule": rule.id})))
            elif hit:
                allowed = True
        return tuple(denials), allowed
