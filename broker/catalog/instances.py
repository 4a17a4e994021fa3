"""Instance/price catalog CSVs (SkyPilot v7 column order, optional Currency column)."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

from broker.yamlfile import PolicyError, Problem, read_text

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
    line: int = field(default=0, compare=False)
    """Its line in the CSV (problems found later, an fx rate missing for its currency, name it)."""


MAX_PROBLEMS = 20
"""Bad cells reported per catalog file (a file of wrong rows says so in the first few)."""


class _Cells:
    """One data row's cells, read by column name; each bad cell noted with its line and column."""

    def __init__(self, cells: list[str], header: list[str], line: int, filename: str) -> None:
        self.cells, self.header, self.line, self.filename = cells, header, line, filename
        self.problems: list[Problem] = []

    def text(self, name: str) -> str:
        return self.cells[self.header.index(name)].strip()

    def bad(self, name: str, message: str) -> None:
        i = self.header.index(name)
        col = 1 + sum(len(c) + 1 for c in self.cells[:i])  # (unquoted cells: a catalog's are)
        self.problems.append(Problem(self.filename, self.line, col, f"{name}: {message}"))

    def number(self, name: str, *, whole: bool = False, optional: bool = False) -> float | None:
        """A finite number >= 0 (empty: None when `optional`, else 0)."""
        text = self.text(name)
        if not text:
            return None if optional else 0.0
        try:
            value = float(text)
        except ValueError:
            self.bad(name, f"not a number: {text!r}")
            return None
        if not math.isfinite(value) or value < 0:
            self.bad(name, f"must be a finite number >= 0, got {text}")
            return None
        if whole and value != int(value):
            self.bad(name, f"must be a whole number (the broker does not share a device), got {text}")
            return None
        return value


def parse_instance_csv(text: str, filename: str, *, default_currency: str) -> list[InstanceRow]:
    """Rows of a catalog CSV, de-duplicated on (type, region, zone): the first row wins. Every bad cell
    (up to `MAX_PROBLEMS`) is a problem at its line and column, naming its column."""
    lines = csv.reader(io.StringIO(text.removeprefix("\ufeff")))  # (a spreadsheet's byte-order mark)
    header = [h.strip() for h in next(lines, [])]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise PolicyError([Problem(filename, 1, 1, f"catalog CSV lacks columns: {', '.join(missing)}")])
    rows: list[InstanceRow] = []
    problems: list[Problem] = []
    seen: set[tuple[str, str, str]] = set()
    for cells in lines:
        n = lines.line_num
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            # (more: a decimal comma, say `4,90`, shifts every cell after it; quote such a cell)
            problems.append(Problem(filename, n, 1, f"{len(cells)} cells, the header has {len(header)}"))
            continue
        row = _row(_Cells(cells, header, n, filename), default_currency, seen)
        problems.extend(row.problems if isinstance(row, _Cells) else ())
        if isinstance(row, InstanceRow):
            rows.append(row)
        if len(problems) >= MAX_PROBLEMS:
            break
    if problems:
        raise PolicyError(problems[:MAX_PROBLEMS])
    return rows


def _row(c: _Cells, default_currency: str, seen: set[tuple[str, str, str]]) -> InstanceRow | _Cells | None:
    """The row, its cells with their problems, or None for a repeated (type, region, zone)."""
    itype, zone = c.text("InstanceType"), c.text("AvailabilityZone")
    key = (itype, c.text("Region"), zone)  # (a zone left empty is per region)
    if key in seen:
        return None
    seen.add(key)
    acc: str | None = c.text("AcceleratorName") or None
    count = c.number("AcceleratorCount", whole=True)
    if acc is None and itype in _KNOWN_EMPTY_ACCELERATOR:
        acc, count = _KNOWN_EMPTY_ACCELERATOR[itype]
    if acc is not None and count == 0:
        c.bad("AcceleratorCount", f"0 with AcceleratorName {acc} (a CPU-only row names none)")
    cpus, memory = c.number("vCPUs"), c.number("MemoryGiB")
    price, spot = c.number("Price", optional=True), c.number("SpotPrice", optional=True)
    if c.problems:
        return c
    currency = c.text("Currency") if "Currency" in c.header else ""
    return InstanceRow(
        instance_type=itype,
        accelerator=acc,
        count=int(count or 0) if acc else 0,
        cpus=cpus or 0.0,
        memory_gb=memory or 0.0,
        price=price,
        spot_price=spot,
        region=c.text("Region"),
        zone=zone,
        currency=currency or default_currency,
        line=c.line,
    )


def load_instance_csv(path: Path, *, default_currency: str = "USD") -> list[InstanceRow]:
    text = read_text(path, "catalog")  # (a byte that is not UTF-8: an error at its line, not a crash)
    return parse_instance_csv(text, str(path), default_currency=default_currency)
