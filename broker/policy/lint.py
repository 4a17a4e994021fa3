"""Warnings for a valid policy that will not do what its author expects (`szb policy check`).

A site whose catalog file has no priced rows for its region passes validation (the file
and region are fine on their own) but silently never runs anything; it is reported as
`FILE:LINE:COL: warning: ...`. (A site with neither partitions nor a catalog, and an
accelerator partition without accelerators, are already errors.) So is a policy that can burst
(on-prem partitions and a cloud site) with `objective.wait_hour_cost` 0: waiting and lateness
then cost nothing in the score, so a job waits on-prem past its max_wait rather than burst to
a dearer cloud, which is not what `max_wait` reads as. A rule testing a flag that no accelerator
has (`"x" in hardware.flags`, `hardware.flags.exists(f, f == "x")`): a misspelling on either side,
in the rule or in accelerators.yaml, turns the rule off without a word. And `burst.sites.*.max_idle`, set: the
broker stops each instance when its job ends and never reuses one, so nothing is ever idle to limit.
A catalog row selling an accelerator accelerators.yaml does not describe: it is classified as the most
restrictive class, above every TPP and PD threshold (safe, but rarely meant).
A rule reading `job.labels.X` without testing `has(job.labels.X)`: a job without the label makes
the rule fail, and a rule that fails denies, to be safe, so every offer the rule covers is refused.
And a `burst.max_wait.by_tenant_kind` entry when `by_priority` sets every priority: a job's
priority is looked up first, so the tenant kind's wait never applies.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

from broker.model import Priority
from broker.policy._policy import Policy
from broker.yamlfile import Loc, position

_LABEL_READ = re.compile(r"""\bjob\.labels(?:\.([A-Za-z_][A-Za-z0-9_]*)|\[\s*(["'])([^"']+)\2\s*\])""")
"""A rule reading one of the job's labels: `job.labels.team` or `job.labels["team"]`."""


def _guarded(expr: str, label: str) -> bool:
    """Whether the rule tests that the job has the label before (or besides) reading it."""
    name = re.escape(label)
    return bool(
        re.search(rf"""\bhas\(\s*job\.labels\.{name}\s*\)""", expr)
        or re.search(rf"""(["']){name}\1\s+in\s+job\.labels\b""", expr)
    )


_FLAG_TESTS = (
    re.compile(r"""(["'])([^"']+)\1\s+in\s+hardware\.flags\b"""),
    re.compile(r"""hardware\.flags\.exists(?:_one)?\(\s*(\w+)\s*,\s*\1\s*==\s*(["'])([^"']+)\2"""),
)
"""The two ways a rule tests an accelerator flag; the flag's name is the last group."""


@dataclass(frozen=True, slots=True)
class PolicyWarning:
    """One warning at `file:line:col` (1-based)."""

    file: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: warning: {self.message}"


def policy_warnings(policy: Policy, doc: Any, filename: str) -> list[PolicyWarning]:
    """Offerless sites, an unpriced wait and a no-op max_idle, positioned in the parsed YAML `doc`."""
    out: list[PolicyWarning] = []

    def warn(loc: Loc, message: str) -> None:
        line, col = position(doc, loc)
        out.append(PolicyWarning(filename, line, col, message))

    for i, site in enumerate(policy.sites):
        spot = site.catalog is not None and site.catalog.spot  # (a spot-only row makes spot offers)
        rows = [
            r for r in policy.instances.get(site.id, ()) if r.price is not None or (spot and r.spot_price)
        ]
        if not site.partitions and not rows:
            where = f" for region {site.catalog.region}" if site.catalog and site.catalog.region else ""
            file = site.catalog.file if site.catalog else ""
            warn(
                ["sites", i, "catalog"],
                f"sites[{i}] ({site.id}): catalog {file} has no priced rows{where}: the site makes no offers",
            )
        # (an undescribed part is classified as the most restrictive: safe, but rarely what was meant)
        missing = sorted(
            {r.accelerator for r in rows if r.accelerator and not policy.accelerators.get(r.accelerator)}
        )
        if missing and site.catalog is not None:
            warn(["sites", i, "catalog"], _undescribed(i, site.id, site.catalog.file, missing))
    clouds = any(not site.partitions for site in policy.sites)
    if clouds and any(site.partitions for site in policy.sites) and policy.objective.wait_hour_cost == 0:
        warn(
            ["objective", "wait_hour_cost"],
            "objective.wait_hour_cost is 0: waiting and lateness cost nothing, so a job waits on-prem past "
            "its max_wait rather than burst to a dearer cloud (price an hour of waiting, e.g. 40)",
        )
    flags = sorted({flag for acc in policy.accelerators for flag in acc.flags})
    for i, rule in enumerate(policy.compliance.rules):
        for field, expr in (("deny", rule.deny), ("allow", rule.allow)):
            for flag in sorted({m.groups()[-1] for p in _FLAG_TESTS for m in p.finditer(expr or "")}):
                if flag in flags:
                    continue
                near = difflib.get_close_matches(flag, flags, n=1)
                hint = f" (did you mean '{near[0]}'?)" if near else ""
                warn(
                    ["compliance", "rules", i, field],
                    f"compliance.rules[{i}] ({rule.id}) tests flag '{flag}', which no accelerator has: "
                    f"the rule never matches{hint}",
                )
    for i, rule in enumerate(policy.compliance.rules):
        for field, expr in (("deny", rule.deny), ("allow", rule.allow)):
            read = {m.group(1) or m.group(3) for m in _LABEL_READ.finditer(expr or "")}
            for label in sorted(x for x in read if not _guarded(expr or "", x)):
                warn(
                    ["compliance", "rules", i, field],
                    f"compliance.rules[{i}] ({rule.id}) reads job.labels.{label} without "
                    f"has(job.labels.{label}): for a job without that label the rule cannot be evaluated, "
                    f"and such a rule denies, to be safe (test it first: has(job.labels.{label}) && ...)",
                )
    for loc, message in [*_group_notes(policy), *_burst_notes(policy)]:
        warn(loc, message)
    return out


def _group_notes(policy: Policy) -> list[tuple[Loc, str]]:
    """Tenants whose explicit `country_groups` leave out groups their country is in."""
    out: list[tuple[Loc, str]] = []
    for i, tenant in enumerate(policy.tenants):
        if tenant.country_groups is None:
            continue
        dropped = sorted(set(policy.regimes.groups_of(tenant.entity_country)) - set(tenant.country_groups))
        if dropped:
            out.append((
                ["tenants", i, "country_groups"],
                f"tenants[{i}] ({tenant.id}): country_groups replaces the groups of entity_country "
                f"{tenant.entity_country}, leaving out {', '.join(dropped)}: export rules for those groups "
                "no longer apply to it (list them too, unless a licence or a ruling says otherwise)",
            ))
    return out


def _undescribed(i: int, site: str, file: str, missing: list[str]) -> str:
    """The warning for catalog accelerators accelerators.yaml does not describe."""
    return (
        f"sites[{i}] ({site}): catalog {file} sells {', '.join(missing)}, which accelerators.yaml does not "
        "describe: rules see it as the most restrictive class, above every TPP and PD threshold "
        "(describe it there to classify it)"
    )


def _burst_notes(policy: Policy) -> list[tuple[Loc, str]]:
    """A no-op `max_idle`, and `max_wait.by_tenant_kind` entries `by_priority` leaves nothing to."""
    out: list[tuple[Loc, str]] = []
    for site_id, limits in policy.burst.sites.items():
        if "max_idle" in limits.model_fields_set:
            said = (
                f"burst.sites.{site_id}.max_idle has no effect: the broker stops each instance when its job "
                "ends and never reuses one, so no instance is kept idle (remove it)"
            )
            out.append((["burst", "sites", site_id, "max_idle"], said))
    mw = policy.burst.max_wait
    if set(Priority) <= set(mw.by_priority):  # (`effective_max_wait` reads the priority's first)
        every = ", ".join(p.value for p in mw.by_priority)  # as the file lists them
        for kind in mw.by_tenant_kind:
            said = (
                f"burst.max_wait.by_tenant_kind.{kind} never applies: burst.max_wait.by_priority sets "
                f"every priority ({every}), and a job's priority is looked up before its tenant's kind "
                "(leave out of by_priority the priorities the tenant kind should decide, e.g. normal)"
            )
            out.append((["burst", "max_wait", "by_tenant_kind", kind], said))
    return out


def shared_batch_users(policy: Policy) -> list[str]:
    """Slurm sites where tenants without a `batch.user` of their own would share the site's one
    user: each such job can read another's environment (its agent secret included) through /proc,
    report its exit and signal it. For `szb serve`'s log at each policy load (the README documents
    the setting; the shipped example leaves it unset for a test cluster without those users)."""
    shared = [t.id for t in policy.tenants if not t.batch.user]
    if len(shared) < 2:
        return []
    return [
        f"site {site.id}: tenants {', '.join(shared)} have no batch.user, so their Slurm jobs all run "
        f"as {site.adapter_config.get('user') or 'the site user'}: one tenant's job can read another's "
        "environment (its agent secret included) through /proc, report its exit and signal it; give each "
        "tenant a user of its own (README: A Unix user per tenant on Slurm)"
        for site in policy.sites
        if site.adapter == "slurm"
    ]
