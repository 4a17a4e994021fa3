"""String fields of the CEL environment whose values the policy knows: a rule comparing one with a
value it never takes (`job.priority == "urgent"`, `hardware.class == "3A090a"`, `site.country ==
"cn"`) loads and never matches, silently: for an export rule, a rule that never applies. Pure."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import get_args

from broker.compliance.celenv import FieldError
from broker.jobspec import Priority, Residency, SpotMode
from broker.policy.schema import PolicyDocument, TenantKind
from broker.validation import did_you_mean

_PATH = r"((?:job|tenant|site|hardware|offer)\s*\.\s*[a-z_]+)"
_QUOTED = r"(\"[^\"\\]*\"|'[^'\\]*')"
_EQ = r"\s*(?:==|!=)\s*"
_COMPARED = (
    re.compile(_PATH + _EQ + _QUOTED),
    re.compile(_QUOTED + _EQ + _PATH),
)
_IN_LIST = re.compile(_PATH + r"\s+in\s*\[([^\]]*)\]")
_ITEM = re.compile(_QUOTED)
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_COUNTRY_FIELDS = (
    "tenant.entity_country", "site.country", "site.operator_country", "hardware.origin_country",
)


NEAR_MISS_ONLY = frozenset({"site.residency", "site.adapter"})
"""Fields whose values are this policy's own (its zones, its sites' adapters): a rule shared by
several policies may name one this policy lacks, so only a near miss of one it has is an error."""


def known_values(
    document: PolicyDocument,
    accelerators: Iterable[str],
    families: Iterable[str],
    classes: Iterable[str],
) -> dict[str, frozenset[str]]:
    """Field path -> every value it can take (fields not listed: not checked). `accelerators`:
    every name the accelerator catalog knows (names, aliases) and the sites' partitions and
    catalogs give; `families`: the catalog's families."""
    zones = frozenset({"global", *document.compliance.residency.zones})
    names = frozenset({"", *accelerators})
    return {
        "job.priority": frozenset(p.value for p in Priority),
        "job.spot": frozenset(s.value for s in SpotMode),
        "job.data_residency": frozenset(r.value for r in Residency),
        "tenant.kind": frozenset(get_args(TenantKind)),
        "site.residency": zones,
        "site.adapter": frozenset(s.adapter for s in document.sites),
        "hardware.class": frozenset({"none", *classes}),
        "hardware.name": names,
        "hardware.family": frozenset({*names, *families}),
        "offer.accelerator": names,
    }


def unknown_values(expr: str, known: Mapping[str, frozenset[str]]) -> list[FieldError]:
    """Each string literal compared (`==`, `!=`, `in [...]`) with a field it is never a value of."""
    found: list[tuple[int, str, str]] = []  # (offset of the literal, field, value)
    for pattern in _COMPARED:
        for m in pattern.finditer(expr):
            path_group, literal_group = (1, 2) if m.group(1)[0] not in "\"'" else (2, 1)
            found.append((m.start(literal_group), m.group(path_group), m.group(literal_group)[1:-1]))
    for m in _IN_LIST.finditer(expr):
        for item in _ITEM.finditer(m.group(2)):
            found.append((m.start(2) + item.start(), m.group(1), item.group(1)[1:-1]))
    errors = []
    for offset, raw_path, value in sorted(found):
        path = re.sub(r"\s+", "", raw_path)
        if path in _COUNTRY_FIELDS and not _COUNTRY.match(value):
            said = f"{path} is an ISO 3166 alpha-2 code in capitals, never {value!r}"
            errors.append(FieldError(offset, said))
        elif path in known and value not in known[path]:
            values = sorted(known[path])
            hint = did_you_mean(value, values)
            if path in NEAR_MISS_ONLY and not hint:
                continue
            shown = ", ".join(values[:12]) + (", ..." if len(values) > 12 else "")
            errors.append(FieldError(offset, f"{path} is never {value!r}{hint} (its values: {shown})"))
    return errors
