"""Export-control regimes as data (configs/regimes.yaml): classes, prongs, country groups."""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Annotated

from pydantic import ConfigDict, Field, ValidationError, model_validator

from broker.catalog.accelerators import exact
from broker.numbers import NoBoolNumbers
from broker.yamlfile import PolicyError, Problem, parse_yaml, position, read_text, validation_problems


class _Data(NoBoolNumbers):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Bound(_Data):
    """`min` inclusive, `max` exclusive; either may be absent."""

    min: float | None = Field(default=None, ge=0)
    max: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _not_empty(self) -> Bound:
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError(f"min {self.min:g} is not below max {self.max:g}: no value is within")
        return self

    def holds(self, value: float | Fraction) -> bool:
        """Whether `value` is within, compared exactly (a PD of exactly 5.92 meets `min: 5.92`)."""
        v = value if isinstance(value, Fraction) else exact(value)
        return (self.min is None or v >= exact(self.min)) and (self.max is None or v < exact(self.max))

    def __str__(self) -> str:
        if self.min is not None and self.max is not None:
            return f"in [{self.min:g}, {self.max:g})"
        if self.min is not None:
            return f">= {self.min:g}"
        return f"< {self.max:g}" if self.max is not None else "any"


class Prong(_Data):
    """One alternative condition of a class; all of its bounds must hold."""

    id: str = Field(min_length=1)
    tpp: Bound | None = None
    pd: Bound | None = None
    interconnect_gbps: Bound | None = None

    @model_validator(mode="after")
    def _bounded(self) -> Prong:
        if self.tpp is None and self.pd is None and self.interconnect_gbps is None:
            raise ValueError(
                "a prong with no bound matches every accelerator (give tpp, pd or interconnect_gbps)"
            )
        return self


class ClassRule(_Data):
    """An export class (e.g. 3A090.a) met when any prong holds."""

    class_: str = Field(alias="class", min_length=1)
    prongs: tuple[Prong, ...] = Field(min_length=1)


class Regime(_Data):
    """A named set of thresholds; classes are tried in order, the first match wins."""

    name: str = Field(min_length=1)
    title: str = ""
    source: str = ""
    default: bool = False
    density_prongs_datacenter_only: bool = True
    classes: tuple[ClassRule, ...] = Field(min_length=1)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c.class_ for c in self.classes)

    def thresholds(self, field: str) -> tuple[float, ...]:
        """Every `min` and `max` the prongs set on `field` (`tpp`, `pd` or `interconnect_gbps`)."""
        out: list[float] = []
        for rule in self.classes:
            for prong in rule.prongs:
                bound = getattr(prong, field)
                if bound is not None:
                    out += [v for v in (bound.min, bound.max) if v is not None]
        return tuple(out)


class RegimeSet(_Data):
    regimes: tuple[Regime, ...] = Field(min_length=1)
    country_groups: dict[Annotated[str, Field(min_length=1)], tuple[str, ...]] = Field(default_factory=dict)
    """Group name -> member countries (ISO 3166 alpha-2, as tenants' entity_country is written)."""

    def get(self, name: str) -> Regime | None:
        return next((r for r in self.regimes if r.name == name), None)

    @property
    def default(self) -> Regime:
        return next((r for r in self.regimes if r.default), self.regimes[0])

    def groups_of(self, country: str) -> tuple[str, ...]:
        """Country groups containing `country`, in file order."""
        return tuple(g for g, members in self.country_groups.items() if country in members)


def load_regimes_text(text: str, filename: str) -> RegimeSet:
    """Parse and validate a regimes file; raises PolicyError with positions."""
    doc = parse_yaml(text, filename)
    if not isinstance(doc, Mapping):
        raise PolicyError([Problem(filename, 1, 1, "expected a mapping with 'regimes:'")])
    try:
        regimes = RegimeSet.model_validate(doc)
    except ValidationError as exc:
        raise PolicyError(validation_problems(exc, doc, filename)) from exc
    problems: list[Problem] = []
    names = [r.name for r in regimes.regimes]
    for i, name in enumerate(names):
        if name in names[:i]:
            line, col = position(doc, ["regimes", i, "name"])
            problems.append(Problem(filename, line, col, f"regimes.{i}.name: duplicate regime {name!r}"))
    for group, members in regimes.country_groups.items():
        for k, code in enumerate(members):
            # a member in another form ("MAC", "cn") matches no tenant: the group silently shrinks
            if not (len(code) == 2 and code.isascii() and code.isalpha() and code.isupper()):
                line, col = position(doc, ["country_groups", group, k])
                problems.append(
                    Problem(
                        filename,
                        line,
                        col,
                        f"country_groups.{group}.{k}: {code!r} is not an ISO 3166 alpha-2 country code "
                        "(as tenants' entity_country is written, e.g. MO, CN)",
                    )
                )
    for i, regime in enumerate(regimes.regimes):
        problems += _duplicates(regime, i, doc, filename)
    if sum(r.default for r in regimes.regimes) > 1:
        line, col = position(doc, ["regimes"])
        problems.append(Problem(filename, line, col, "regimes: more than one regime is marked default"))
    if problems:
        raise PolicyError(problems)
    return regimes


def _duplicates(regime: Regime, i: int, doc: object, filename: str) -> list[Problem]:
    """A class named twice in the regime (the second never applies), and a prong id used twice in
    one class (a reason naming it could mean either)."""
    out: list[Problem] = []

    def at(loc: list[str | int], message: str) -> None:
        line, col = position(doc, ["regimes", i, "classes", *loc])
        out.append(Problem(filename, line, col, f"regimes.{i}.classes.{'.'.join(map(str, loc))}: {message}"))

    classes = regime.class_names
    for j, rule in enumerate(regime.classes):
        if rule.class_ in classes[:j]:
            said = f"duplicate class {rule.class_!r} in regime {regime.name}"
            at([j, "class"], f"{said} (the first one wins; the second never applies)")
        ids = [p.id for p in rule.prongs]
        for k, prong in enumerate(ids):
            if prong in ids[:k]:
                said = f"duplicate prong {prong!r} in class {rule.class_} of regime {regime.name}"
                at([j, "prongs", k, "id"], f"{said} (a reason naming it could mean either)")
    return out


def load_regimes(path: Path) -> RegimeSet:
    """Load configs/regimes.yaml (or another regimes file)."""
    text = read_text(path, "regimes file")  # (not UTF-8: an error at its line, not a crash)
    return load_regimes_text(text, str(path))
