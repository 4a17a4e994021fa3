"""`Policy`: a validated routing policy with everything derived from it at load time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from broker.catalog.accelerators import Accelerator, AcceleratorCatalog, normalize
from broker.catalog.instances import InstanceRow
from broker.compliance.classify import NONE, UNKNOWN_PD, Classification, classify, classify_unknown
from broker.compliance.regime import Regime, RegimeSet
from broker.compliance.rules import RuleSet
from broker.policy.schema import (
    BurstSettings,
    Compliance,
    Objective,
    PolicyDocument,
    Site,
    Tenant,
)


@dataclass(frozen=True, slots=True)
class Hardware:
    """An accelerator as placement sees it: specs (None if unknown or CPU-only) and class."""

    name: str | None
    spec: Accelerator | None
    classification: Classification
    variables: Mapping[str, Any]
    """The CEL `hardware` variable."""
    match_keys: frozenset[str] = frozenset()
    """Normalized names a job's `any_of` may use for it: name, family, aliases."""


@dataclass(frozen=True, slots=True)
class SiteFacts:
    """What an Explanation prints about a site: its country and residency zone."""

    country: str
    residency: str


class PolicyIndex:
    """Mutable caches owned by one Policy (memoization only; never changes a result)."""

    __slots__ = ("hardware", "rates", "site_facts", "site_vars", "sites", "tenant_vars", "tenants")

    def __init__(self) -> None:
        self.sites: dict[str, Site] = {}
        self.tenants: dict[str, Tenant] = {}
        self.hardware: dict[str | None, Hardware] = {}
        self.site_vars: dict[str, dict[str, Any]] = {}
        self.tenant_vars: dict[str, dict[str, Any]] = {}
        self.site_facts: dict[str, Any] = {}
        self.rates: dict[str, float] = {}


class Policy(BaseModel):
    """A validated policy. Frozen; derived lookups are cached privately (pure memoization)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    hash: str
    """sha256 over the policy file's text and the files it refers to (`files`); every decision records
    it, so that one hash names one set of data (`szb policy show HASH` finds them all)."""
    source: str
    document: PolicyDocument
    accelerators: AcceleratorCatalog
    regimes: RegimeSet
    regime: Regime
    rules: RuleSet
    instances: dict[str, tuple[InstanceRow, ...]]
    """Catalog rows per site id (sites with a `catalog:`)."""
    inputs: tuple[str, ...] = ()
    """The files the policy file refers to (accelerators, regimes, price catalogs): watched too."""
    inputs_digest: str = ""
    """sha256 over those files' names and texts, as loaded."""
    files: tuple[tuple[str, str], ...] = Field(default=(), repr=False)
    """(name relative to the policy's folder, text) of each file it refers to, as loaded: stored with
    the version for the audit trail."""

    index: PolicyIndex = Field(default_factory=lambda: PolicyIndex(), exclude=True, repr=False)
    """Lookups derived at load time (a plain object: attribute access stays cheap)."""

    def model_post_init(self, _context: object) -> None:
        ix = self.index
        ix.sites = {s.id: s for s in self.document.sites}
        ix.tenants = {t.id: t for t in self.document.tenants}
        ix.site_vars = {s.id: _site_vars(s) for s in self.document.sites}
        ix.tenant_vars = {t.id: self._make_tenant_vars(t) for t in self.document.tenants}
        ix.rates = {self.document.currency: 1.0, **self.document.fx}

    # -- plain accessors -------------------------------------------------------------------
    @property
    def version(self) -> str:
        """What a reload and the caches compare: the policy file and every file it refers to."""
        return f"{self.hash}:{self.inputs_digest}"

    @property
    def currency(self) -> str:
        return self.document.currency

    @property
    def fx(self) -> Mapping[str, float]:
        return self.document.fx

    @property
    def objective(self) -> Objective:
        return self.document.objective

    @property
    def sites(self) -> tuple[Site, ...]:
        return self.document.sites

    @property
    def tenants(self) -> tuple[Tenant, ...]:
        return self.document.tenants

    @property
    def burst(self) -> BurstSettings:
        return self.document.burst

    @property
    def compliance(self) -> Compliance:
        return self.document.compliance

    @property
    def site_facts(self) -> Mapping[str, Any]:
        """Site id -> (country, residency) facts an Explanation prints (built once)."""
        facts = self.index.site_facts
        if not facts:
            facts.update({s.id: SiteFacts(s.country, s.residency) for s in self.document.sites})
        return facts

    def site(self, site_id: str) -> Site | None:
        return self.index.sites.get(site_id)

    def tenant(self, tenant_id: str) -> Tenant | None:
        return self.index.tenants.get(tenant_id)

    def rate(self, currency: str) -> float | None:
        """Units of the policy currency per unit of `currency`; None when unknown."""
        return self.index.rates.get(currency)

    def tenant_groups(self, tenant: Tenant) -> tuple[str, ...]:
        if tenant.country_groups is not None:
            return tenant.country_groups
        return self.regimes.groups_of(tenant.entity_country)

    # -- CEL variables, built once -----------------------------------------------------------
    def site_variables(self, site_id: str) -> dict[str, Any]:
        return self.index.site_vars[site_id]

    def tenant_variables(self, tenant_id: str) -> dict[str, Any]:
        tv = self.index.tenant_vars.get(tenant_id)
        if tv is None:  # an undeclared tenant: no licences, no groups, no sites
            tv = {
                "id": tenant_id,
                "name": "",
                "kind": "",
                "entity_country": "",
                "country_groups": [],
                "export_licences": [],
                "allowed_sites": [],
                "monthly_budget": 0.0,
                "has_voucher": False,
            }
        return tv

    def _make_tenant_vars(self, t: Tenant) -> dict[str, Any]:
        return {
            "id": t.id,
            "name": t.name,
            "kind": t.kind,
            "entity_country": t.entity_country,
            "country_groups": list(self.tenant_groups(t)),
            "export_licences": list(t.export_licences),
            "allowed_sites": list(t.allowed_sites or [s.id for s in self.document.sites]),
            "monthly_budget": float(t.monthly_budget or 0.0),
            "has_voucher": bool(t.vouchers),
        }

    def hardware(self, name: str | None) -> Hardware:
        """Spec and export classification of an accelerator name (cached)."""
        hw = self.index.hardware.get(name)
        if hw is not None:
            return hw
        spec = self.accelerators.get(name)
        if name is None:
            cls = Classification("", 0.0, None, NONE, "no accelerator", self.regime.name)
        elif spec is None:
            cls = classify_unknown(name, self.regime)
        else:
            cls = classify(spec, self.regime)
        variables = {
            "name": spec.name if spec else (name or ""),
            "vendor": spec.vendor if spec else "",
            "family": (spec.family or spec.name) if spec else (name or ""),
            "class": cls.cls,
            "tpp": float(cls.tpp),
            "pd": _rule_pd(name, cls),
            "pd_known": cls.pd is not None,
            "memory_gb": float(spec.memory_gb) if spec else 0.0,
            "interconnect_gbps": float(spec.interconnect_gbps) if spec else 0.0,
            "datacenter": bool(spec.datacenter) if spec else False,
            "origin_country": spec.origin_country if spec else "",
            "flags": list(spec.flags) if spec else [],
            "known": spec is not None or name is None,
        }
        keys = {normalize(name or "")}
        if spec is not None:
            keys |= {normalize(spec.name), normalize(spec.family or spec.name), *map(normalize, spec.aliases)}
        hw = Hardware(name, spec, cls, variables, frozenset(keys))
        self.index.hardware[name] = hw
        return hw


def _rule_pd(name: str | None, cls: Classification) -> float:
    """`hardware.pd`: unknown die area (or a part not in the catalog) reads as dense, never as
    -1, so a rule denying dense parts denies it as the classifier would; -1 with no accelerator."""
    if cls.pd is not None:
        return float(cls.pd)
    return -1.0 if name is None else UNKNOWN_PD


def _site_vars(s: Site) -> dict[str, Any]:
    return {
        "id": s.id,
        "adapter": s.adapter,
        "provider": s.provider,
        "region": s.region,
        "country": s.country,
        "residency": s.residency,
        "operator_country": s.operator_country or s.country,
        "carbon_gco2_kwh": float(s.carbon_gco2_kwh),
        "labels": dict(s.labels),
    }
