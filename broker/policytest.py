"""Operator policy tests (`szb policy test`): expectations about placements, like `opa test`.

A test file::

    tests:
      - name: cn-mainland data of pku-nlp never leaves the mainland
        tenant: pku-nlp
        job: {name: t, command: [run], runtime_estimate: 2h, data_residency: cn-mainland,
              resources: {accelerators: {count: 8, any_of: [A800, A100, H100]}}}
        expect:
          residency: cn-mainland         # chosen site's zone; also: site, not_site,
          # sites_in: [...], accelerator, allowed: true|false, denied_by: RULE
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from broker.catalog.accelerators import normalize
from broker.compliance.rules import DEFAULT_DENY
from broker.jobfile import MAX_JOB_FILE_BYTES
from broker.jobspec import submission_problems
from broker.model import JobSpec, SiteId, TenantId
from broker.offline_images import static_no_images
from broker.placement import PlacementContext, place
from broker.placement.blocklist import BLOCKED
from broker.placement.bursting import BURST_OFF
from broker.placement.gang import GANG
from broker.placement.hardware import FIT
from broker.placement.health import DRAINED, UNHEALTHY, UNKNOWN_SITE
from broker.placement.images import IMAGES
from broker.placement.names import unknown_names
from broker.placement.price_cap import CAP, FX
from broker.placement.spot import SPOT
from broker.placement.tenant import ALLOWED_SITES, UNKNOWN_TENANT
from broker.policy import Policy
from broker.policy.offers import static_offers
from broker.validation import did_you_mean
from broker.yamlfile import PolicyError, Problem, parse_yaml, position, read_text, validation_problems

BUILT_IN_RULES = frozenset(
    {BLOCKED, BURST_OFF, GANG, FIT, UNHEALTHY, UNKNOWN_SITE, IMAGES, CAP, FX, SPOT, ALLOWED_SITES}
    | {UNKNOWN_TENANT, DEFAULT_DENY[0], DRAINED}
)
"""The rules placement itself gives as reasons (besides the policy's own and its residency and export)."""


def rule_ids(policy: Policy) -> set[str]:
    """Every rule id an offer of `policy` can be rejected by (what `expect.denied_by` may name)."""
    comp = policy.document.compliance
    ids = {r.id for r in comp.rules} | {comp.residency.id} | set(BUILT_IN_RULES)
    return ids | ({comp.export.id} if comp.export is not None else set())


class Expect(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    allowed: bool | None = Field(default=None, description="Whether any offer is allowed.")
    site: str | None = None
    not_site: str | None = None
    sites_in: tuple[str, ...] | None = None
    residency: str | None = Field(default=None, description="Zone of the chosen site.")
    accelerator: str | None = None
    denied_by: str | None = Field(default=None, description="A rule id that rejects at least one offer.")

    @model_validator(mode="after")
    def _names_something(self) -> Expect:
        if not self.model_fields_set:  # (`expect: {}` passed whatever the policy did)
            raise ValueError(f"names nothing to check: give one or more of {', '.join(Expect.model_fields)}")
        return self


class Case(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str = Field(min_length=1)
    tenant: str
    job: JobSpec
    expect: Expect
    blocked: tuple[str, ...] = ()
    unhealthy: dict[str, str] = Field(default_factory=dict)


class Suite(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    tests: tuple[Case, ...] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    passed: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


def load_tests(path: Path, policy: Policy) -> Suite:
    """Read a test file; raises PolicyError with positions, also for names `policy` lacks."""
    doc = parse_yaml(read_text(path, "tests file", MAX_JOB_FILE_BYTES), str(path))
    try:
        suite = Suite.model_validate(doc)
    except ValidationError as exc:
        raise PolicyError(validation_problems(exc, doc, str(path))) from exc
    problems = _dangling(suite, policy, doc, str(path))
    if problems:
        raise PolicyError(problems)
    return suite


def _dangling(suite: Suite, policy: Policy, doc: Any, filename: str) -> list[Problem]:
    """A tenant, site, zone or rule the policy does not declare, or an accelerator nobody knows: the
    case would pass or fail vacuously (a misspelt tenant is placed nowhere, so `allowed: false` holds)."""
    sites = {s.id for s in policy.sites}
    zones = {"global", *policy.document.compliance.residency.zones}
    offers = static_offers(policy)
    problems: list[Problem] = []

    def check(loc: list[str | int], name: str, known: set[str], kind: str, *, key: bool = False) -> None:
        if name not in known:
            line, col = position(doc, ["tests", *loc], key=key)
            where = ".".join(map(str, ["tests", *loc]))
            problems.append(Problem(filename, line, col, f"{where}: unknown {kind} {name!r}"))

    for i, case in enumerate(suite.tests):
        check([i, "tenant"], case.tenant, {t.id for t in policy.tenants}, "tenant")
        for j, key in enumerate(case.blocked):  # a site id, `site/region` or an offer key
            check([i, "blocked", j], key.split("/", 1)[0], sites, "site")
        for site in case.unhealthy:
            check([i, "unhealthy", site], site, sites, "site", key=True)
        e = case.expect
        for field in ("site", "not_site"):
            value = getattr(e, field)
            if value is not None:
                check([i, "expect", field], value, sites, "site")
        for j, site in enumerate(e.sites_in or ()):
            check([i, "expect", "sites_in", j], site, sites, "site")
        if e.residency is not None:
            check([i, "expect", "residency"], e.residency, zones, "residency zone")
        if e.denied_by is not None and e.denied_by not in (rules := rule_ids(policy)):
            line, col = position(doc, ["tests", i, "expect", "denied_by"])
            said = (
                f"tests.{i}.expect.denied_by: unknown rule {e.denied_by!r}{did_you_mean(e.denied_by, rules)}"
            )
            problems.append(
                Problem(filename, line, col, said)
            )  # (it would fail, as if the policy were wrong)
        for j, why in unknown_names(case.job.resources.accelerators.any_of, policy, offers):
            loc: list[str | int] = ["tests", i, "job", "resources", "accelerators", "any_of", j]
            line, col = position(doc, loc)
            problems.append(Problem(filename, line, col, f"{'.'.join(map(str, loc))}: {why}"))
        for sub, why in submission_problems(case.job):  # what the broker refuses, as a job file does
            loc = ["tests", i, "job", *sub]
            line, col = position(doc, loc)
            problems.append(Problem(filename, line, col, f"{'.'.join(map(str, loc))}: {why}"))
    return sorted(problems, key=lambda p: (p.line, p.col))


def run_tests(policy: Policy, suite: Suite) -> list[Result]:
    """Run every case through the real `place()` on the policy's static offers."""
    offers = static_offers(policy)
    no_images = static_no_images(policy)
    results = []
    for case in suite.tests:
        ctx = PlacementContext(
            blocked=frozenset(case.blocked),
            unhealthy_sites={SiteId(k): v for k, v in case.unhealthy.items()},
            no_images=no_images,
        )
        ex = place(case.job, TenantId(case.tenant), offers, policy, ctx)
        chosen = ex.chosen.offer if ex.chosen is not None else None
        site = policy.site(chosen.site) if chosen is not None else None
        e = case.expect
        failures = []
        where = f"{chosen.site}/{chosen.instance_type}" if chosen else "nothing"
        if e.allowed is not None and (chosen is not None) != e.allowed:
            failures.append(f"expected {'a placement' if e.allowed else 'no placement'}, got {where}")
        if e.site is not None and (chosen is None or chosen.site != e.site):
            failures.append(f"expected site {e.site}, got {where}")
        # (each of these says where the job lands: placed nowhere, it fails, not passes vacuously)
        if e.not_site is not None and (chosen is None or chosen.site == e.not_site):
            failures.append(f"expected any site but {e.not_site}, got {where}")
        if e.sites_in is not None and (chosen is None or chosen.site not in e.sites_in):
            failures.append(f"expected one of {', '.join(e.sites_in)}, got {where}")
        if e.residency is not None and (site is None or site.residency != e.residency):
            got = site.residency if site is not None else "nothing"
            failures.append(f"expected residency {e.residency}, got {got} ({where})")
        if e.accelerator is not None and (
            chosen is None or not _same_part(policy, chosen.accelerator, e.accelerator)
        ):
            failures.append(
                f"expected accelerator {e.accelerator}, got {chosen.accelerator if chosen else 'nothing'}"
            )
        if e.denied_by is not None and not any(r.rule == e.denied_by for s in ex.offers for r in s.reasons):
            failures.append(f"expected rule {e.denied_by} to reject an offer; it rejected none")
        results.append(Result(case.name, not failures, "; ".join(failures)))
    return results


def _same_part(policy: Policy, got: str | None, expected: str) -> bool:
    """Whether `got` is the accelerator `expected` names: spelt alike but for case and separators,
    or the catalog's name for the same part (an alias)."""
    if got is None:
        return False
    spec = policy.accelerators.get(expected)
    return normalize(got) == normalize(expected) or (
        spec is not None and spec is policy.accelerators.get(got)
    )
