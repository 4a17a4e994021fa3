"""Cross-checks of a schema-valid policy document: references between sections resolve.

Each check reports through `at(loc, message)` so every problem keeps its FILE:LINE:COL;
none stops at the first problem.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from broker.catalog.accelerators import AcceleratorCatalog
from broker.compliance.regime import Regime, RegimeSet
from broker.compliance.rules import PLACEHOLDERS, template_fields
from broker.policy._fairshare_check import Report
from broker.policy.schema import PolicyDocument, Site

RANKERS = ("score", "cost", "wait", "carbon", "preference", "free", "site", "offer")


def pick_regime(document: PolicyDocument, regimes: RegimeSet, at: Report) -> Regime:
    """The regime `compliance.regime` names (the default one when unnamed or unknown)."""
    name = document.compliance.regime
    if name is None:
        return regimes.default
    found = regimes.get(name)
    if found is None:
        at(
            ["compliance", "regime"],
            f"compliance.regime: unknown regime {name!r} "
            f"(known: {', '.join(r.name for r in regimes.regimes)})",
        )
        return regimes.default
    return found


def check_sites(
    document: PolicyDocument,
    accelerators: AcceleratorCatalog,
    base: Path,
    at: Report,
    present: Callable[[Path], bool] = Path.is_file,
) -> dict[str, int]:
    """Site ids are unique, zones and currencies known, partitions sane; returns id -> index.
    `present` says whether a catalog file exists (on disk, or among a stored version's files)."""
    currencies = {document.currency, *document.fx}
    own = document.fx.get(document.currency)
    if own is not None and own != 1:  # (prices in it are multiplied by their currency's rate)
        at(
            ["fx", document.currency],
            f"fx.{document.currency}: a rate of {own:g} for {document.currency}, the policy's own currency, "
            f"would multiply every {document.currency} price by {own:g} (leave it out: it is 1)",
        )
    site_ids: dict[str, int] = {}
    for zone, spec in document.compliance.residency.zones.items():
        if not spec.countries:  # an empty list would let a site anywhere claim the zone
            at(
                ["compliance", "residency", "zones", zone],
                f"compliance.residency.zones.{zone}: zone {zone!r} lists no countries "
                "(a zone must list the site countries it allows, e.g. countries: [CN])",
                key=True,
            )
    for i, site in enumerate(document.sites):
        if site.id in site_ids:
            at(
                ["sites", i, "id"],
                f"sites.{i}.id: duplicate site id {site.id!r} (first at sites.{site_ids[site.id]})",
            )
        site_ids.setdefault(site.id, i)
        _check_residency(document, site, i, at)
        if not site.partitions and site.catalog is None:
            at(["sites", i], f"sites.{i}: a site needs 'partitions' or a 'catalog'")
        _check_operator(site, i, at)
        _check_regions(site, i, at)
        _check_partitions(document, site, i, accelerators, at)
        if site.catalog is not None:
            if site.catalog.currency not in currencies:
                at(
                    ["sites", i, "catalog", "currency"],
                    f"sites.{i}.catalog.currency: no fx rate for {site.catalog.currency} (add it under fx)",
                )
            if not present(base / site.catalog.file):
                at(
                    ["sites", i, "catalog", "file"],
                    f"sites.{i}.catalog.file: file not found: {base / site.catalog.file} (relative to the "
                    "policy's folder: a copy of the policy saved elsewhere needs the catalog beside it)",
                )
    return site_ids


def _check_residency(document: PolicyDocument, site: Site, i: int, at: Report) -> None:
    """A site's zone is declared and lists the site's country (checked for every zone, so a job
    confined to a zone never runs at a site outside its countries)."""
    zones = document.compliance.residency.zones
    if site.residency == "global":
        return
    if site.residency not in zones:
        at(
            ["sites", i, "residency"],
            f"sites.{i}.residency: unknown residency zone {site.residency!r} "
            f"(declared: {', '.join(['global', *zones])})",
        )
    elif site.country not in (countries := zones[site.residency].countries):
        listed = ", ".join(countries) if countries else "it lists no countries"
        at(
            ["sites", i, "residency"],
            f"sites.{i}.residency: site country {site.country} is not in zone {site.residency!r} ({listed})",
        )


REGION_KEYS = ("region", "region_id")
"""The adapter_config keys naming a region: `region` (what the adapters read, merged over the site's)
and `region_id` (the Alibaba SDK's word, which no adapter reads: a second name that must agree)."""


def _check_regions(site: Site, i: int, at: Report) -> None:
    """The site's region, its catalog's and its adapter's are one: a catalog of another region offers
    rows from there, and an adapter_config region overrides the site's where instances launch."""
    region, said = site.region, "the site's region"
    if not region and site.catalog is not None:
        region, said = site.catalog.region, "the site's catalog region"
    elif site.catalog is not None and site.catalog.region != region:
        at(
            ["sites", i, "catalog", "region"],
            f"sites.{i}.catalog.region: {site.catalog.region} is not the site's region {region} (the site "
            "would offer that region's rows as its own)",
        )
    for key in REGION_KEYS:
        value = site.adapter_config.get(key)
        if region and value is not None and str(value) != region:
            why = "the adapter would launch its instances there" if key == "region" else "no adapter reads it"
            at(
                ["sites", i, "adapter_config", key],
                f"sites.{i}.adapter_config.{key}: {value} is not {said} {region} ({why})",
            )


def _aws_global(site: Site) -> bool:
    """Whether the site is in AWS's global partition (run by Amazon Web Services, a US company);
    the China regions (cn-*) are the aws-cn partition, run by Sinnet and NWCD."""
    region = site.region or str(site.adapter_config.get("region", ""))
    return (
        (site.adapter == "aws" or site.provider == "aws")
        and site.provider != "aws-cn"
        and site.adapter_config.get("partition") != "aws-cn"
        and not region.startswith("cn-")
    )


US_LIBCLOUD_DRIVERS = {
    "gce": "Google", "azure": "Microsoft", "azure_arm": "Microsoft", "digitalocean": "DigitalOcean",
    "linode": "Akamai (Linode)", "vultr": "Vultr", "equinixmetal": "Equinix", "ibm": "IBM",
}
"""libcloud compute drivers of clouds run by US companies (besides `ec2*`, AWS's global partition)."""


def us_operator(site: Site) -> str | None:
    """Who runs the site from the US, when its adapter says so; None when nothing does."""
    if _aws_global(site):
        return "is in AWS's global partition"
    if site.adapter != "libcloud":
        return None
    driver = str(site.adapter_config.get("driver", "")).lower()
    if driver.startswith("ec2"):
        region = site.region or str(site.adapter_config.get("region", ""))
        return None if region.startswith("cn-") else "runs on libcloud's ec2 driver (AWS's global partition)"
    company = US_LIBCLOUD_DRIVERS.get(driver) or ("Rackspace" if driver.startswith("rackspace") else None)
    return None if company is None else f"runs on libcloud's {driver} driver ({company})"


def _check_operator(site: Site, i: int, at: Report) -> None:
    # operator_country defaults to the site's country, right for on-prem and domestic clouds but
    # not for a US cloud's region abroad: the export rule for US-operated sites would silently be off
    # there (AWS through its own adapter or libcloud's ec2 driver; Google, Azure … through libcloud)
    run = us_operator(site) if site.operator_country is None and site.country != "US" else None
    if run is not None:
        at(
            ["sites", i, "country"],
            f"sites.{i}.operator_country: site {site.id} {run}, operated from the "
            f"US, but names no operator_country, so it defaults to the site's country ({site.country}) "
            "and export rules for US-operated sites do not apply there; write operator_country: US",
        )


def _check_partitions(
    document: PolicyDocument, site: Site, i: int, accelerators: AcceleratorCatalog, at: Report
) -> None:
    for j, part in enumerate(site.partitions):
        ploc: list[str | int] = ["sites", i, "partitions", j]
        if part.accelerator is not None and accelerators.get(part.accelerator) is None:
            at(
                [*ploc, "accelerator"],
                f"sites.{i}.partitions.{j}.accelerator: unknown accelerator "
                f"{part.accelerator!r} (not in {document.accelerators})",
            )
        if part.accelerator is not None and part.count_per_node < 1:
            at(
                [*ploc, "count_per_node"],
                f"sites.{i}.partitions.{j}.count_per_node: must be >= 1 for an accelerator partition",
            )
        for k, n in enumerate(part.slot_counts or ()):
            if not 1 <= n <= part.count_per_node:
                at(
                    [*ploc, "slot_counts", k],
                    f"sites.{i}.partitions.{j}.slot_counts.{k}: {n} is not within 1..{part.count_per_node}",
                )


def check_tenants(
    document: PolicyDocument,
    regime: Regime,
    regimes: RegimeSet,
    site_ids: dict[str, int],
    at: Report,
) -> dict[str, int]:
    """Tenant ids are unique and every site, class and group they name exists."""
    tenant_ids: dict[str, int] = {}
    for i, tenant in enumerate(document.tenants):
        if tenant.id in tenant_ids:
            at(["tenants", i, "id"], f"tenants.{i}.id: duplicate tenant id {tenant.id!r}")
        tenant_ids.setdefault(tenant.id, i)
        if tenant.batch.user == "root":  # every tenant's jobs could then read and signal every other's
            at(["tenants", i, "batch", "user"], f"tenants.{i}.batch.user: a tenant's jobs never run as root")
        for j, ref in enumerate(tenant.allowed_sites or ()):
            if ref not in site_ids:
                at(["tenants", i, "allowed_sites", j], f"tenants.{i}.allowed_sites.{j}: unknown site {ref!r}")
        for j, lic in enumerate(tenant.export_licences):
            if lic not in regime.class_names:
                at(
                    ["tenants", i, "export_licences", j],
                    f"tenants.{i}.export_licences.{j}: unknown class "
                    f"{lic!r} (regime {regime.name}: "
                    f"{', '.join(regime.class_names)})",
                )
        for j, group in enumerate(tenant.country_groups or ()):
            if group not in regimes.country_groups:
                at(
                    ["tenants", i, "country_groups", j],
                    f"tenants.{i}.country_groups.{j}: unknown country group {group!r}",
                )
        for j, voucher in enumerate(tenant.vouchers):
            for k, ref in enumerate(voucher.sites):
                if ref not in site_ids:
                    at(
                        ["tenants", i, "vouchers", j, "sites", k],
                        f"tenants.{i}.vouchers.{j}.sites.{k}: unknown site {ref!r}",
                    )
    for sid in document.burst.sites:
        if sid not in site_ids:
            at(["burst", "sites", sid], f"burst.sites.{sid}: unknown site {sid!r}", key=True)
    return tenant_ids


def check_compliance(document: PolicyDocument, regime: Regime, regimes: RegimeSet, at: Report) -> None:
    """Export classes and groups exist in the regime; reason templates use known placeholders."""
    comp = document.compliance
    if comp.export is not None:
        for j, cls in enumerate(comp.export.classes):
            if cls not in regime.class_names:
                at(
                    ["compliance", "export", "classes", j],
                    f"compliance.export.classes.{j}: unknown class {cls!r} (regime {regime.name})",
                )
        for j, group in enumerate(comp.export.tenant_country_groups):
            if group not in regimes.country_groups:
                at(
                    ["compliance", "export", "tenant_country_groups", j],
                    f"compliance.export.tenant_country_groups.{j}: unknown country group {group!r}",
                )
    for section in ("residency", "export"):
        rule = getattr(comp, section)
        if rule is None:
            continue
        try:
            names = template_fields(rule.reason)
        except ValueError as exc:
            at(["compliance", section, "reason"], f"compliance.{section}.reason: bad template: {exc}")
            continue
        for name in names:
            if name not in PLACEHOLDERS:
                at(
                    ["compliance", section, "reason"],
                    f"compliance.{section}.reason: unknown placeholder {{{name}}}",
                )


def check_rank(document: PolicyDocument, at: Report) -> None:
    """`objective.rank` names known rankers, once each, none after the total order 'offer'."""
    rank = document.objective.rank
    for j, name in enumerate(rank):
        loc: list[str | int] = ["objective", "rank", j]
        if name not in RANKERS:
            at(loc, f"objective.rank.{j}: unknown ranker {name!r} (known: {', '.join(RANKERS)})")
        elif name in rank[:j]:
            at(loc, f"objective.rank.{j}: duplicate ranker {name!r}")
        elif "offer" in rank[:j]:
            at(loc, f"objective.rank.{j}: {name!r} is unreachable: 'offer' already orders every offer")
