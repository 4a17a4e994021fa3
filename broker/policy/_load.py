"""Load a policy file: YAML -> schema -> referenced files -> cross-checks -> CEL -> Policy."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import ValidationError

from broker.catalog.accelerators import AcceleratorCatalog, load_accelerators
from broker.catalog.instances import InstanceRow, load_instance_csv
from broker.compliance.regime import RegimeSet, load_regimes
from broker.compliance.rules import PLACEHOLDERS, RuleSet, template_fields
from broker.policy._cel_check import compile_rules
from broker.policy._fairshare_check import check_fair_share
from broker.policy._policy import Policy
from broker.policy.schema import PolicyDocument
from broker.yamlfile import PolicyError, Problem, parse_yaml, position, validation_problems

RANKERS = ("score", "cost", "wait", "carbon", "preference", "free", "site", "offer")


def load_policy(path: Path) -> Policy:
    """Read and validate a policy file; raises PolicyError listing every problem."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PolicyError([Problem(str(path), 1, 1, f"cannot read policy: {exc.strerror}")]) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError([Problem(str(path), 1, 1, f"policy is not UTF-8: {exc.reason}")]) from exc
    return load_policy_text(text, str(path))


def load_policy_text(text: str, filename: str) -> Policy:
    """Validate policy text; relative paths in it resolve against `filename`'s directory."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    doc = parse_yaml(text, filename)
    if not isinstance(doc, dict):
        raise PolicyError([Problem(filename, 1, 1, "a policy must be a YAML mapping")])
    try:
        document = PolicyDocument.model_validate(doc)
    except ValidationError as exc:
        raise PolicyError(validation_problems(exc, doc, filename)) from exc
    base = Path(filename).parent
    problems: list[Problem] = []

    def at(loc: list[str | int], message: str, *, key: bool = False) -> None:
        line, col = position(doc, loc, key=key)
        problems.append(Problem(filename, line, col, message))

    accelerators: AcceleratorCatalog | None = None
    regimes: RegimeSet | None = None
    for field in ("accelerators", "regimes"):
        ref = base / getattr(document, field)
        if not ref.is_file():
            at([field], f"{field}: file not found: {ref}")
            continue
        try:
            if field == "accelerators":
                accelerators = load_accelerators(ref)
            else:
                regimes = load_regimes(ref)
        except PolicyError as exc:
            problems.extend(exc.problems)
    if accelerators is None or regimes is None:
        raise PolicyError(problems)

    regime = regimes.default
    comp = document.compliance
    if comp.regime is not None:
        found = regimes.get(comp.regime)
        if found is None:
            at(
                ["compliance", "regime"],
                f"compliance.regime: unknown regime {comp.regime!r} "
                f"(known: {', '.join(r.name for r in regimes.regimes)})",
            )
        else:
            regime = found

    currencies = {document.currency, *document.fx}
    site_ids: dict[str, int] = {}
    zones = comp.residency.zones
    for i, site in enumerate(document.sites):
        if site.id in site_ids:
            at(
                ["sites", i, "id"],
                f"sites.{i}.id: duplicate site id {site.id!r} (first at sites.{site_ids[site.id]})",
            )
        site_ids.setdefault(site.id, i)
        if site.residency != "global" and site.residency not in zones:
            at(
                ["sites", i, "residency"],
                f"sites.{i}.residency: unknown residency zone {site.residency!r} "
                f"(declared: {', '.join(['global', *zones])})",
            )
        elif (
            site.residency in zones
            and zones[site.residency].countries
            and site.country not in zones[site.residency].countries
        ):
            at(
                ["sites", i, "residency"],
                f"sites.{i}.residency: site country {site.country} is not in zone "
                f"{site.residency!r} ({', '.join(zones[site.residency].countries)})",
            )
        if not site.partitions and site.catalog is None:
            at(["sites", i], f"sites.{i}: a site needs 'partitions' or a 'catalog'")
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
                        f"sites.{i}.partitions.{j}.slot_counts.{k}: {n} is not "
                        f"within 1..{part.count_per_node}",
                    )
        if site.catalog is not None:
            if site.catalog.currency not in currencies:
                at(
                    ["sites", i, "catalog", "currency"],
                    f"sites.{i}.catalog.currency: no fx rate for {site.catalog.currency} (add it under fx)",
                )
            if not (base / site.catalog.file).is_file():
                at(
                    ["sites", i, "catalog", "file"],
                    f"sites.{i}.catalog.file: file not found: {base / site.catalog.file}",
                )

    tenant_ids: dict[str, int] = {}
    for i, tenant in enumerate(document.tenants):
        if tenant.id in tenant_ids:
            at(["tenants", i, "id"], f"tenants.{i}.id: duplicate tenant id {tenant.id!r}")
        tenant_ids.setdefault(tenant.id, i)
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

    rank = document.objective.rank
    for j, name in enumerate(rank):
        loc: list[str | int] = ["objective", "rank", j]
        if name not in RANKERS:
            at(loc, f"objective.rank.{j}: unknown ranker {name!r} (known: {', '.join(RANKERS)})")
        elif name in rank[:j]:
            at(loc, f"objective.rank.{j}: duplicate ranker {name!r}")
        elif "offer" in rank[:j]:
            at(loc, f"objective.rank.{j}: {name!r} is unreachable: 'offer' already orders every offer")

    check_fair_share(document, at)

    compiled, cel_problems = compile_rules(
        comp.rules, doc, text, filename, set(site_ids), set(tenant_ids), comp.default == "deny"
    )
    problems.extend(cel_problems)
    problems.sort(key=lambda p: (p.file != filename, p.file, p.line, p.col))
    if problems:
        raise PolicyError(problems)

    instances: dict[str, tuple[InstanceRow, ...]] = {}
    for site in document.sites:
        if site.catalog is not None:
            rows = load_instance_csv(base / site.catalog.file, default_currency=site.catalog.currency)
            instances[site.id] = tuple(r for r in rows if r.region == site.catalog.region)
    return Policy(
        hash=digest,
        source=filename,
        document=document,
        accelerators=accelerators,
        regimes=regimes,
        regime=regime,
        rules=RuleSet(tuple(compiled), default_deny=comp.default == "deny"),
        instances=instances,
    )
