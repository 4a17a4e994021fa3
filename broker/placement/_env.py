"""Per-decision environment: the job as placement reads it, and offers grouped by site x hardware."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from broker.catalog.accelerators import normalize
from broker.model import JobSpec, Offer, SpotMode
from broker.placement.parts import Part, market_part
from broker.placement.types import PlacementContext
from broker.policy import Hardware, Policy
from broker.policy.schema import Site, Tenant

FLAT, PER_DEVICE, ZERO = 1.0, 2.0, 0.0
"""How a group's carbon term applies (`Group.scoring`): the same for each offer (CPU-only), per
accelerator (times the offer's count), or not at all (no intensity)."""


class Env:
    """Everything a filter or scorer needs about one decision, computed once."""

    __slots__ = (
        "_job_vars",
        "any_of",
        "count",
        "cpus",
        "ctx",
        "job_fp",
        "machine_h",
        "memory_gb",
        "min_memory_gb",
        "nodes",
        "policy",
        "price_cap",
        "residency",
        "rule_plan",
        "runtime_h",
        "spec",
        "spot",
        "tenant",
        "tenant_id",
    )

    def __init__(self, spec: JobSpec, tenant_id: str, policy: Policy, ctx: PlacementContext) -> None:
        self.spec = spec
        self.policy = policy
        self.ctx = ctx
        self.tenant_id = tenant_id
        self.tenant: Tenant | None = policy.tenant(tenant_id)
        acc = spec.resources.accelerators
        self.count = acc.count
        self.any_of = frozenset(normalize(n) for n in acc.any_of)
        self.min_memory_gb = acc.min_memory_gb
        self.cpus = spec.resources.cpus
        self.memory_gb = spec.resources.memory_gb
        self.spot = spec.spot
        self.price_cap = spec.max_price_per_hour
        self.residency = spec.data_residency.value
        self.runtime_h = spec.runtime_estimate.total_seconds() / 3600.0
        self.nodes = spec.resources.nodes
        self.machine_h = self.runtime_h * self.nodes
        """Node-hours: a gang of N nodes costs and emits N times one node's runtime."""
        self._job_vars: dict[str, Any] | None = None
        self.rule_plan: Any = None
        """The compliance rules' plan for this tenant and job (`broker.placement.rules`)."""
        self.job_fp = policy.rules.job_fingerprint(self.job_vars()) if policy.rules.job_paths else ()

    def job_vars(self) -> dict[str, Any]:
        """The CEL `job` variable (built on first use)."""
        if self._job_vars is None:
            s = self.spec
            acc = s.resources.accelerators
            self._job_vars = {
                "name": s.name,
                "priority": s.priority.value,
                "spot": s.spot.value,
                "data_residency": s.data_residency.value,
                "max_price_per_hour": float(s.max_price_per_hour or 0.0),
                "runtime_hours": self.runtime_h,
                "max_wait_hours": s.max_wait.total_seconds() / 3600.0 if s.max_wait is not None else -1.0,
                "accelerators": {
                    "count": acc.count,
                    "any_of": list(acc.any_of),
                    "min_memory_gb": float(acc.min_memory_gb),
                },
                "cpus": float(s.resources.cpus),
                "memory_gb": float(s.resources.memory_gb),
                "labels": dict(s.labels),
                "image": s.image or "",
            }
        return self._job_vars

    @property
    def spot_never(self) -> bool:
        return self.spot is SpotMode.NEVER

    @property
    def spot_required(self) -> bool:
        return self.spot is SpotMode.REQUIRED


class Group:
    """Offers sharing a site and an accelerator model: most verdicts are the same for all."""

    __slots__ = ("_parts", "_scoring", "accelerator", "fields", "hw", "offers", "site", "site_id")

    def __init__(self, site_id: str, accelerator: str | None, site: Site | None, hw: Hardware) -> None:
        self.site_id = site_id
        self.accelerator = accelerator
        self.site = site
        self.hw = hw
        self.offers: list[Offer] = []
        self.fields: list[dict[str, Any]] | None = None
        """Each offer's field mapping (`__dict__`), aligned with `offers`, when grouping read them."""
        self._parts: dict[bool | None, Part] | None = None
        self._scoring: tuple[Policy, tuple[float, float, float, float]] | None = None

    def part(self, spot: bool | None, policy: Policy) -> Part:
        """The group's offers of one market (None: all of them) with their values, built on
        first use and kept with the snapshot (they depend on the offers and the policy only)."""
        parts = self._parts
        if parts is None:
            parts = self._parts = {}
        part = parts.get(spot)
        if part is None:
            fields = self.field_maps(self.offers)
            part = parts[spot] = market_part(self.offers, fields, spot, policy, self.scoring(policy))
        return part

    def forget(self) -> None:
        """Drop what decisions derived on the group's market parts (`Part.forget`); the parts stay."""
        for part in (self._parts or {}).values():
            part.forget()

    def scoring(self, policy: Policy) -> tuple[float, float, float, float]:
        """What the carbon and preference terms read of the group, kept with the snapshot: power
        per device (kW), site intensity, carbon mode (`broker.placement.vector`), preference per hour."""
        kept = self._scoring
        if kept is not None and kept[0] is policy:
            return kept[1]
        site, default_w = self.site, policy.document.default_power_w
        intensity = site.carbon_gco2_kwh if site is not None else 0.0
        kw, mode = default_w / 1000.0, FLAT  # as `score_carbon` computes them
        if not intensity:
            intensity, mode = 0.0, ZERO
        elif self.accelerator is not None:
            spec = self.hw.spec
            kw, mode = (spec.power_w if spec is not None else default_w) / 1000.0, PER_DEVICE
        values = (kw, intensity, mode, site.preference_per_hour if site is not None else 0.0)
        self._scoring = (policy, values)
        return values

    def field_maps(self, offers: list[Offer]) -> list[dict[str, Any]]:
        """The field mappings of `offers` (this group's offers or a subset of them).

        A field read on an `Offer` (a pydantic model) goes through its `__getattr__` hook
        (~400 machine instructions); a subscript of its mapping costs a fifth of that."""
        if type(offers) is Part:
            return offers.fields
        fields = self.fields
        if fields is not None and offers is self.offers:
            return fields
        return [o.__dict__ for o in offers]

    def labels(self, env: Env) -> dict[str, str]:
        """Values for reason templates."""
        site = self.site
        operator = (site.operator_country or site.country) if site else ""
        groups = env.policy.tenant_groups(env.tenant) if env.tenant else ()
        return {
            "site": self.site_id,
            "tenant": env.tenant_id,
            "accelerator": self.accelerator or "CPU",
            "class": self.hw.classification.cls,
            "region": site.region if site else "",
            "country": site.country if site else "",
            "operator_country": operator,
            "zone": env.residency,
            "site_zone": site.residency if site else "",
            "tenant_group": "/".join(groups) or "-",
            "instance_type": "",
        }


def group_offers(offers: Sequence[Offer], policy: Policy) -> list[Group]:
    """Group offers by (site, accelerator), keeping first-seen order."""
    groups: dict[tuple[str, str | None], tuple[list[Offer], list[dict[str, Any]]]] = {}
    get = groups.get
    site: object = _NOTHING
    acc: object = _NOTHING
    members: list[Offer] = []
    fields: list[dict[str, Any]] = []
    # catalogs and readings list a site's offers together: a group is looked up once per run;
    # each offer's field mapping is read once and kept for the per-offer passes
    for o in offers:
        d = o.__dict__
        s, a = d["site"], d["accelerator"]
        if a != acc or s != site:
            site, acc = s, a
            entry = get((s, a))
            if entry is None:
                entry = groups[(s, a)] = ([], [])
            members, fields = entry
        members.append(o)
        fields.append(d)
    out: list[Group] = []
    sites = policy.index.sites
    hardware: dict[str | None, Hardware] = {}
    for (site_id, name), (members, fields) in groups.items():
        hw = hardware.get(name)
        if hw is None:
            hw = hardware[name] = policy.hardware(name)
        g = Group(site_id, name, sites.get(site_id), hw)
        g.offers = members
        g.fields = fields
        out.append(g)
    return out


_NOTHING = object()
