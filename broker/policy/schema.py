"""The routing-policy YAML schema (what operators write). `szb policy schema` exports it.

Cross-references (a tenant naming a site, a rule scoped to a tenant …) and CEL rules are
checked after this schema validates, in `broker.policy._check`.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import Field, StrictInt

from broker.durations import Duration
from broker.model import Priority
from broker.policy.schema_parts import (
    BlocklistTtl,
    Budget,
    FailureThrottle,
    Limits,
    LimitsOverride,
    PreemptPatient,
    Retries,
    SiteBurst,
    _Doc,
)

_ID = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
ID_PATTERN = _ID
"""What a site, tenant or rule id may be (a DNS label): `szb token` checks a tenant id by it too."""
_COUNTRY = r"^[A-Z]{2}$"
_CURRENCY = r"^[A-Z]{3}$"
CountryCode = Annotated[str, Field(pattern=_COUNTRY)]
"""ISO 3166 alpha-2: a code in another form ("USA") would match no site and silently do nothing."""


class Objective(_Doc):
    """Weights of the score terms; the score is an expected cost in the policy currency (lower wins)."""

    price: float = Field(default=1.0, ge=0, description="Weight of the expected price (price x runtime).")
    wait_hour_cost: float = Field(default=0.0, ge=0, description="Cost of one hour of expected wait.")
    carbon_g_cost: float = Field(default=0.0, ge=0, description="Cost of one gram of CO2.")
    preference: float = Field(default=1.0, ge=0, description="Weight of the sites' preference terms.")
    rank: tuple[str, ...] = Field(
        default=("score", "site", "offer"),
        description="Tie-break chain: score, cost, wait, carbon, preference, free, site, offer.",
    )


class Partition(_Doc):
    """An on-prem (Slurm/local) partition; one offer per slot size, at a shadow price."""

    name: str = Field(min_length=1)
    accelerator: str | None = Field(default=None, description="Catalog name; null for CPU-only.")
    count_per_node: int = Field(default=0, ge=0, le=64)
    nodes: int = Field(default=1, ge=1)
    price_hour: float = Field(
        gt=0,
        description="Shadow (chargeback) price per accelerator-hour, or per job slot-hour for CPU-only.",
    )
    cpus_per_node: float = Field(default=0, ge=0)
    memory_gb_per_node: float = Field(default=0, ge=0)
    slot_counts: tuple[int, ...] | None = Field(
        default=None, description="Accelerator counts offered; default every count from 1 to count_per_node."
    )
    expected_wait: Duration | None = Field(default=None, description="Static wait estimate for explain.")


class CatalogRef(_Doc):
    """Instance types from a catalog CSV (path relative to the policy file)."""

    file: str = Field(min_length=1)
    region: str = Field(min_length=1)
    currency: str = Field(default="USD", pattern=_CURRENCY)
    spot: bool = Field(default=True, description="Offer the spot market where the CSV has a spot price.")


class Site(_Doc):
    """Where capacity lives: one provider region (or the on-prem cluster)."""

    id: str = Field(pattern=_ID)
    adapter: str = Field(min_length=1, description="Adapter entry-point name: local, slurm, aws, alibaba …")
    adapter_config: dict[str, Any] = Field(default_factory=dict, description="Passed to the adapter as is.")
    provider: str = Field(default="", description="Partition of the provider, e.g. aws, aws-cn, aliyun-cn.")
    region: str = ""
    zones: tuple[str, ...] = ()
    country: str = Field(pattern=_COUNTRY, description="Where the hardware is (ISO 3166 alpha-2).")
    residency: str = Field(
        min_length=1, description="Data-residency zone (declared in compliance.residency)."
    )
    operator_country: str | None = Field(
        default=None, pattern=_COUNTRY,
        description="HQ of the operator; default country (a US cloud abroad must say US).",
    )
    carbon_gco2_kwh: float = Field(default=0.0, ge=0)
    preference_per_hour: float = Field(
        default=0.0, description="Added to the score per hour of runtime; negative = preferred."
    )
    partitions: tuple[Partition, ...] = ()
    catalog: CatalogRef | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class Voucher(_Doc):
    """A compute voucher: a discount on covered sites until the balance is spent."""

    id: str = Field(min_length=1)
    balance: float = Field(ge=0)
    discount: float = Field(gt=0, le=1, description="Fraction of the price the voucher pays.")
    sites: tuple[str, ...] = Field(default=(), description="Sites covered; empty = all.")
    expires: date | None = Field(
        default=None,
        description="Its last day (Beijing time, YYYY-MM-DD); from the next, its balance pays nothing.",
    )


TenantKind = Literal["university", "institute", "sme", "partner", "internal"]


class TenantShare(_Doc):
    """A tenant's claim on on-prem capacity; unset fields inherit its kind's, then `fair_share.defaults`."""

    weight: float | None = Field(default=None, gt=0, le=1000, description="Fair-share weight (relative).")
    quota: dict[str, Annotated[StrictInt, Field(ge=0)]] | None = Field(  # ("2" is not a count)
        default=None,
        description="Guaranteed accelerators (cores for a CPU-only partition) per on-prem partition, "
        "keyed `site/partition`.",
    )
    may_borrow: bool | None = Field(
        default=None, description="May run on idle on-prem capacity beyond its quota (borrowed work)."
    )
    priorities: tuple[Priority, ...] | None = Field(
        default=None, description="Priority classes the tenant may declare on its jobs."
    )


class BatchAccount(_Doc):
    """How the tenant is known to an on-prem batch system (Slurm), so its fair share agrees."""

    account: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Slurm account (--account); default the tenant id.",
    )
    qos: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Slurm QOS (--qos) of all its jobs, over fair_share.qos_by_priority.",
    )
    user: str | None = Field(
        default=None,
        max_length=32,
        pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$",
        description=(
            "Unix user its Slurm jobs run as (a JWT minted for it); default the site's user; never root."
        ),
    )


class Tenant(_Doc):
    """Who pays: an organisation with its jurisdiction, licences, sites and money."""

    id: str = Field(pattern=_ID)
    name: str = ""
    kind: TenantKind
    entity_country: str = Field(pattern=_COUNTRY, description="Country of the headquarters.")
    country_groups: tuple[str, ...] | None = Field(
        default=None,
        description="EAR country groups; default derived from entity_country and the regimes file.",
    )
    export_licences: tuple[str, ...] = Field(default=(), description="Classes licensed, e.g. 3A090.b.")
    allowed_sites: tuple[str, ...] | None = Field(default=None, description="null = every site.")
    monthly_budget: float | None = Field(default=None, ge=0)
    vouchers: tuple[Voucher, ...] = ()
    share: TenantShare = TenantShare()
    batch: BatchAccount = BatchAccount()
    limits: LimitsOverride = Field(
        default_factory=LimitsOverride, description="This tenant's quotas; unset ones take `limits`."
    )


class MaxWait(_Doc):
    """How long a job without its own may wait on-prem before it bursts: by_priority, else by_tenant_kind."""

    default: Duration = Field(default="30m", validate_default=True)
    by_priority: dict[Priority, Duration] = Field(default_factory=dict)
    by_tenant_kind: dict[TenantKind, Duration] = Field(default_factory=dict)


class BurstSettings(_Doc):
    """When and how far to burst to the cloud (used by the bursting logic)."""

    enabled: bool = Field(
        default=True,
        description="false: no cloud site runs a job (placement refuses every cloud offer with the "
        "reason `burst.enabled`): jobs wait for on-prem capacity, and a job only a cloud could run is "
        "refused at submit.",
    )
    max_wait: MaxWait = MaxWait()
    hysteresis: Duration = Field(default="10m", validate_default=True)
    wait_estimate_factor: float = Field(
        default=1.0,
        gt=0,
        le=2,
        description="Scales on-prem wait estimates in the burst decision; below 1 trusts the queue to "
        "drain sooner than estimated (estimates built from time limits run high).",
    )
    wait_model: Literal["fluid", "projected"] = Field(
        default="projected",
        description="fluid: backlog / capacity x wait_estimate_factor, bursting after the hysteresis; "
        "projected: each job's start projected from running jobs' ends and the queue ahead, bursting "
        "at the last responsible moment (where the dispatcher supplies projections).",
    )
    late_wait_factor: float = Field(
        default=4.0,
        ge=0,
        description="Each hour a job waits past its max_wait costs this many times wait_hour_cost.",
    )
    firm_deadline_share_gap: float = Field(
        default=2.0,
        ge=0,
        description="Projected waits: a job's max_wait is firm (projected late, it bursts at its last "
        "responsible moment whatever the premium) while another active tenant's fair-share ratio is "
        "at least this many times its own tenant's (the capacity it waits for is owed to it); 0: never. "
        "The same gap keeps preempt_patient from stopping such a tenant's work for the other's burst.",
    )
    sites: dict[str, SiteBurst] = Field(default_factory=dict, description="Per-site limits, by site id.")
    failure_throttle: FailureThrottle = FailureThrottle()
    budget: Budget = Budget()
    deadline_slack_factor: float = Field(default=1.5, ge=1)
    spot_max_expected_restarts: float = Field(
        default=3.0,
        ge=0,
        description="Spot is refused for a job expected to be interrupted more often than this "
        "(from the site's interruption rate and the job's checkpoint interval).",
    )
    spot_max_interruptions: int = Field(default=3, ge=1, description="A job interrupted on spot this many "
                                        "times runs on-demand from then on; one requiring spot fails.")
    heartbeat_timeout: Duration = Field(default="5m", validate_default=True)
    blocklist_ttl: BlocklistTtl = BlocklistTtl()
    attempt_timeout: Duration = Field(default="20m", validate_default=True)
    give_up_after: Duration = Field(default="24h", validate_default=True)
    retries: Retries = Retries()
    preempt_patient: PreemptPatient = PreemptPatient()


class ResidencyZone(_Doc):
    countries: tuple[CountryCode, ...] = Field(default=(), description="Site countries allowed in the zone.")
    description: str = ""


class ResidencyRule(_Doc):
    """Built-in filter: a job's data_residency zone must equal its site's zone."""

    id: str = "residency"
    reason: str = "job data must stay in {zone}; site {site} is in {site_zone} ({country})"
    zones: dict[str, ResidencyZone] = Field(default_factory=dict)


class ExportRule(_Doc):
    """Built-in filter: licence needed for controlled hardware at sites under a foreign jurisdiction."""

    id: str = "export"
    operator_countries: tuple[CountryCode, ...] = ("US",)
    tenant_country_groups: tuple[str, ...] = ("D:5", "Macau")
    classes: tuple[str, ...] = ("3A090.a", "3A090.b")
    reason: str = (
        "{class} hardware ({accelerator}) at a site operated from {operator_country} needs an export "
        "licence for tenants headquartered in {tenant_group}"
    )


class Rule(_Doc):
    """An operator rule: a CEL condition over job, tenant, site, offer and hardware."""

    id: str = Field(min_length=1)
    description: str = ""
    deny: str | None = None
    allow: str | None = None
    reason: str = ""
    sites: tuple[str, ...] | None = Field(default=None, description="Only these sites (null = all).")
    tenants: tuple[str, ...] | None = Field(default=None, description="Only these tenants (null = all).")


class Compliance(_Doc):
    regime: str | None = Field(default=None, description="Regime name; default the regimes file's default.")
    default: Literal["allow", "deny"] = "allow"
    residency: ResidencyRule = ResidencyRule()
    export: ExportRule | None = ExportRule()
    rules: tuple[Rule, ...] = ()


class Reclaim(_Doc):
    """Preempting borrowed on-prem work when a tenant needs its guaranteed quota back."""

    enabled: bool = True
    grace: Duration = Field(default="30s", validate_default=True, description="SIGTERM → SIGKILL.")
    max_capacity_share: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Waste rate bound: a bucket of lost accelerator-seconds refilled at this share of the "
        "partition, holding `window` of it; a reclaim goes when it holds the loss or is full (into debt).",
    )
    window: Duration = Field(default="10m", validate_default=True)


class FairShare(_Doc):
    """How scarce on-prem capacity is shared across tenants (weighted dominant-resource fairness)."""

    half_life: Duration = Field(
        default="1d",
        validate_default=True,
        description="Past usage counts half after this long; 0s = only what runs now counts.",
    )
    defaults: TenantShare = TenantShare(
        weight=1.0, quota={}, may_borrow=True, priorities=(Priority.LOW, Priority.NORMAL)
    )
    by_tenant_kind: dict[TenantKind, TenantShare] = Field(default_factory=dict)
    hold_for_under_share: bool = Field(
        default=True,
        description="A waiting job of a tenant within its quota or under its share keeps later "
        "(borrowed, over-share) jobs from taking the capacity it waits for.",
    )
    over_share_burst_ratio: float | None = Field(
        default=None,
        gt=0,
        description="A job whose tenant uses more than this multiple of its entitled share does not "
        "wait on-prem for its max_wait: it bursts at once when a cloud offer is allowed (null = off).",
    )
    reclaim: Reclaim = Reclaim()
    qos_by_priority: dict[Priority, Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]] = Field(
        default_factory=dict,
        description="Slurm QOS (--qos) per job priority class, for tenants without a batch.qos of their own.",
    )


class GangSettings(_Doc):
    """Multi-node (gang) jobs: `resources.nodes` > 1, placed all-or-nothing on one site."""

    spot: bool = Field(default=False, description="Gangs may run on spot capacity (one loss kills all).")


class PolicyDocument(_Doc):
    """The whole routing policy file."""

    version: Literal[1]
    currency: str = Field(pattern=_CURRENCY)
    fx: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict, description="1 unit of KEY = VALUE units of currency."
    )
    objective: Objective = Objective()
    accelerators: str = Field(default="accelerators.yaml", description="Accelerator catalog, relative path.")
    regimes: str = Field(default="regimes.yaml", description="Export regimes file, relative path.")
    default_power_w: float = Field(default=150.0, ge=0, description="Power of a CPU-only offer, for carbon.")
    sites: tuple[Site, ...] = Field(min_length=1)
    tenants: tuple[Tenant, ...] = ()
    limits: Limits = Field(
        default_factory=Limits, description="Default per-tenant quotas (a tenant's `limits` override them)."
    )
    burst: BurstSettings = BurstSettings()
    compliance: Compliance = Compliance()
    fair_share: FairShare = FairShare()
    gangs: GangSettings = GangSettings()
