"""Instance/price catalog CSVs (SkyPilot v7 column order, optional Currency column)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from broker.yamlfile import PolicyError, Problem

REQUIRED = (
    "InstanceType",
    "AcceleratorName",
    "AcceleratorCount",
    "vCPUs",
    "MemoryGiB",
    "Price",
    "SpotPrice",
    "Region",
    "AvailabilityZone",
)

_KNOWN_EMPTY_ACCELERATOR = {"trn2.48xlarge": ("Trainium2", 16)}
"""Upstream rows with an empty accelerator column (per the provider's documentation)."""


@dataclass(frozen=True, slots=True)
class InstanceRow:
    """One instance type in one zone, with its on-demand and spot price per hour."""

    instance_type: str
    accelerator: str | None
    count: int
    cpus: float
    memory_gb: float
    price: float | None
    spot_price: float | None
    region: str
    zone: str
    currency: str


def _float(text: str) -> float | None:
    text = text.strip()
    return float(text) if text else None


def parse_instance_csv(text: str, filename: str, *, default_currency: str) -> list[InstanceRow]:
    """Rows of a catalog CSV, de-duplicated on (type, zone): the first row wins."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in REQUIRED if c not in (reader.fieldnames or ())]
    if missing:
        raise PolicyError([Problem(filename, 1, 1, f"catalog CSV lacks columns: {', '.join(missing)}")])
    rows: list[InstanceRow] = []
    seen: set[tuple[str, str]] = set()
    for n, rec in enumerate(reader, start=2):
        try:
            itype = rec["InstanceType"].strip()
            key = (itype, rec["AvailabilityZone"].strip())
            if key in seen:
                continue
            seen.add(key)
            acc: str | None = rec["AcceleratorName"].strip() or None
            count = int(float(rec["AcceleratorCount"] or 0))
            if acc is None and itype in _KNOWN_EMPTY_ACCELERATOR:
                acc, count = _KNOWN_EMPTY_ACCELERATOR[itype]
            rows.append(
                InstanceRow(
                    instance_type=itype,
                    accelerator=acc,
                    count=count if acc else 0,
                    cpus=float(rec["vCPUs"] or 0),
                    memory_gb=float(rec["MemoryGiB"] or 0),
                    price=_float(rec["Price"]),
                    spot_price=_float(rec["SpotPrice"]),
                    region=rec["Region"].strip(),
                    zone=key[1],
                    currency=(rec.get("Currency") or "").strip() or default_currency,
                )
            )
        except (ValueError, AttributeError) as exc:
            raise PolicyError([Problem(filename, n, 1, f"bad catalog row: {exc}")]) from exc
    return rows


def load_instance_csv(path: Path, *, default_currency: str = "USD") -> list[InstanceRow]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError([Problem(str(path), 1, 1, f"cannot read catalog: {exc.strerror}")]) from exc
    return parse_instance_csv(text, str(path), default_currency=default_currency)
