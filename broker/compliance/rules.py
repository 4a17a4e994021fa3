"""Operator rules compiled once at load, evaluated per distinct combination, memoized.

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

from broker.compliance.celenv import Path, lookup

MEMO_LIMIT = 200_000
"""Entries kept before the memo is cleared (bounded memory; results stay correct)."""

PLACEHOLDERS = frozenset(
    {
        "site",
        "tenant",
        "accelerator",
        "class",
        "region",
        "country",
        "operator_country",
        "rule",
        "zone",
        "site_zone",
        "tenant_group",
        "instance_type",
    }
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

DEFAULT_DENY = ("compliance.default", "no allow rule matched and compliance.default is deny")


class RuleSet:
    """All operator rules of a policy with their memo; evaluation is pure (a cache only)."""

    def __init__(self, rules: tuple[CompiledRule, ...], *, default_deny: bool) -> None:
        self.rules = rules
        self.default_deny = default_deny
        self.group_rules = tuple(r for r in rules if not r.uses_offer)
        self.offer_rules = tuple(r for r in rules if r.uses_offer)
        self.job_paths = tuple(sorted({p for r in rules for p in r.paths if p[0] == "job"}))
        self.offer_paths = tuple(sorted({p for r in self.offer_rules for p in r.paths if p[0] == "offer"}))
        self._memo: dict[tuple[Any, ...], Verdict] = {}

    def __len__(self) -> int:
        return len(self.rules)

    def job_fingerprint(self, job: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(lookup(job, p[1:]) for p in self.job_paths)

    def offer_fingerprint(self, offer: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(lookup(offer, p[1:]) for p in self.offer_paths)

    def evaluate(
        self,
        key: tuple[Any, ...],
        variables: Callable[[], dict[str, Any]],
        site: str,
        tenant: str,
        labels: Callable[[], Mapping[str, str]],
        *,
        offer: bool,
    ) -> Verdict:
        """Verdict of the group rules (`offer=False`) or of the rules reading `offer`, memoized by `key`."""
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        rules = self.offer_rules if offer else self.group_rules
        verdict = self._run(rules, variables(), site, tenant, labels)
        if len(self._memo) >= MEMO_LIMIT:
            self._memo.clear()
        self._memo[key] = verdict
        return verdict

    @staticmethod
    def _run(
        rules: tuple[CompiledRule, ...],
        variables: dict[str, Any],
        site: str,
        tenant: str,
        labels: Callable[[], Mapping[str, str]],
    ) -> Verdict:
        denials: list[tuple[str, str]] = []
        allowed = False
        ctx = cel.Context(variables)
        for rule in rules:
            if not rule.in_scope(site, tenant):
                continue
            try:
                hit = rule.program.execute(ctx) is True
            except Exception as exc:  # a rule that cannot be evaluated fails closed
                if rule.effect == "deny":
                    denials.append(
                        (
                            rule.id,
                            f"rule could not be evaluated ({type(exc).__name__}: {exc}); denied to be safe",
                        )
                    )
                continue
            if rule.effect == "deny" and hit:
                denials.append((rule.id, render(rule.reason, {**labels(), "rule": rule.id})))
            elif rule.effect == "allow" and hit:
                allowed = True
        return tuple(denials), allowed
