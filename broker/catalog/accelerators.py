"""The accelerator catalog (configs/accelerators.yaml): specs from which TPP and PD follow."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from fractions import Fraction
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from broker.numbers import NoBoolNumbers
from broker.yamlfile import PolicyError, Problem, parse_yaml, position, read_text, validation_problems

BITS: Mapping[str, int] = {
    "fp4": 4,
    "int4": 4,
    "fp8": 8,
    "int8": 8,
    "fp16": 16,
    "bf16": 16,
    "tf32": 32,
    "fp32": 32,
    "int32": 32,
    "fp64": 64,
}
"""Bit length of each precision name (TPP = dense TOPS x bit length)."""


def exact(value: float) -> Fraction:
    """The decimal a file wrote (`repr` gives it back), as an exact fraction.

    Export thresholds (PD 5.92, 3.2, 1.6) and datasheet figures are decimals that binary floats
    only approximate: in floats 2054.24 / 347 (PD exactly 5.92) comes out 5.9199999..., under
    the threshold it is at. Classification compares these exact values instead.
    """
    return Fraction(repr(value))


MAX_TOPS = 1e7
"""Dense TOPS no accelerator comes near (the largest parts of 2026 are ~1e4 at their narrowest)."""


class Accelerator(NoBoolNumbers):
    """One accelerator model with the specs its export classification needs."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str = Field(min_length=1)
    vendor: str = Field(min_length=1)
    family: str = ""
    aliases: tuple[str, ...] = ()
    memory_gb: float = Field(gt=0)
    dense_tops: dict[str, float] = Field(min_length=1)
    die_area_mm2: float | None = Field(default=None, ge=1, le=100_000)  # (wafer-scale parts ~46,000)
    interconnect_gbps: float = Field(ge=0)
    datacenter: bool
    origin_country: str = Field(pattern=r"^[A-Z]{2}$")
    power_w: float = Field(default=300, ge=0)
    flags: tuple[str, ...] = ()
    provenance: str = ""

    @field_validator("dense_tops")
    @classmethod
    def _known_precisions(cls, v: dict[str, float]) -> dict[str, float]:
        for prec, tops in v.items():
            if prec not in BITS:
                raise ValueError(f"unknown precision {prec!r} (known: {', '.join(BITS)})")
            if tops <= 0:
                raise ValueError(f"{prec}: dense TOPS must be > 0")
            if tops > MAX_TOPS:  # (the classification's arithmetic must stay within floats)
                limit = f"at most {MAX_TOPS:g}"
                raise ValueError(f"{prec}: {tops:g} dense TOPS is beyond any accelerator ({limit})")
        return v

    @property
    def exact_tpp(self) -> Fraction:
        """Total processing performance: max over precisions of dense TOPS x bit length, exactly."""
        return max(exact(tops) * BITS[prec] for prec, tops in self.dense_tops.items())

    @property
    def exact_pd(self) -> Fraction | None:
        """Performance density TPP / die area, exactly; None when the die area is unknown."""
        return None if self.die_area_mm2 is None else self.exact_tpp / exact(self.die_area_mm2)

    @property
    def tpp(self) -> float:
        """`exact_tpp` as a float (for display and the CEL `hardware` variable)."""
        return float(self.exact_tpp)

    @property
    def pd(self) -> float | None:
        """`exact_pd` as a float; None when the die area is unknown."""
        pd = self.exact_pd
        return None if pd is None else float(pd)


def normalize(name: str) -> str:
    """Canonical lookup key of an accelerator name: case and separators ignored."""
    return "".join(ch for ch in name.lower() if ch.isalnum())


class AcceleratorCatalog(BaseModel):
    """All known accelerators, looked up by name, alias or spelling variant."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    accelerators: tuple[Accelerator, ...]
    source: str = ""
    _index: dict[str, Accelerator] = PrivateAttr(default_factory=dict)

    def model_post_init(self, _context: object) -> None:
        index: dict[str, Accelerator] = {}
        for acc in self.accelerators:
            for key in (acc.name, *acc.aliases):
                index.setdefault(normalize(key), acc)
        self._index = index

    def get(self, name: str | None) -> Accelerator | None:
        """The accelerator called `name` (or one of its aliases), None when unknown."""
        if not name:
            return None
        return self._index.get(normalize(name))

    def __iter__(self) -> Iterator[Accelerator]:  # type: ignore[override]
        return iter(self.accelerators)

    def names(self) -> list[str]:
        return [a.name for a in self.accelerators]


def load_accelerators_text(text: str, filename: str) -> AcceleratorCatalog:
    """Parse and validate accelerator YAML; raises PolicyError with positions."""
    doc = parse_yaml(text, filename)
    if not isinstance(doc, Mapping) or "accelerators" not in doc:
        raise PolicyError([Problem(filename, 1, 1, "expected a mapping with a list under 'accelerators:'")])
    try:
        catalog = AcceleratorCatalog.model_validate({"accelerators": doc["accelerators"], "source": filename})
    except ValidationError as exc:
        raise PolicyError(validation_problems(exc, doc, filename)) from exc
    seen: dict[str, int] = {}
    problems: list[Problem] = []
    for i, acc in enumerate(catalog.accelerators):
        for key in (acc.name, *acc.aliases):
            k = normalize(key)
            if k in seen and seen[k] != i:
                line, col = position(doc, ["accelerators", i, "name"])
                problems.append(
                    Problem(
                        filename,
                        line,
                        col,
                        f"accelerators.{i}: name or alias {key!r} is also used by accelerators.{seen[k]}",
                    )
                )
            seen.setdefault(k, i)
    if problems:
        raise PolicyError(problems)
    return catalog


def load_accelerators(path: Path) -> AcceleratorCatalog:
    """Load configs/accelerators.yaml (or another catalog file)."""
    text = read_text(path, "accelerator catalog")  # (not UTF-8: an error at its line, not a crash)
    return load_accelerators_text(text, str(path))
