"""Export classification of an accelerator under a regime: TPP, PD, class and the reason."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from broker.catalog.accelerators import Accelerator
from broker.compliance.regime import Prong, Regime

NONE = "none"
UNKNOWN = "unknown"
UNKNOWN_PD = 1.0e6
"""The PD rules see (`hardware.pd`) for a part whose die area is unknown: far above every bound
(real parts are under 100), as `_prong_holds` assumes its density prongs met, so `hardware.pd >= X`
holds for it. Finite, not infinity: `int(hardware.pd)` or `hardware.pd - x` must still evaluate."""
UNKNOWN_TPP = 1.0e9
"""The TPP of a part missing from the accelerator catalog, for the same reason: far above every
bound (real parts are under 100,000), so `hardware.tpp >= X` holds for it as its class assumes."""


def places(value: float, thresholds: Collection[float], least: int) -> int:
    """Decimals to show `value` with: `least`, or more where rounding to `least` would put it onto
    or across a threshold (a PD of 5.918 shown as 5.92 beside a class that needs 5.92 reads wrong)."""
    p = least
    while p < 12 and any((round(value, p) >= t) != (value >= t) for t in thresholds):
        p += 1
    return p


@dataclass(frozen=True, slots=True)
class Classification:
    """The verdict for one accelerator: `cls` is a class name, `none` or `unknown`."""

    name: str
    tpp: float
    pd: float | None
    cls: str
    reason: str
    regime: str
    tpp_places: int = 0
    """Decimals that keep the shown TPP on its side of every threshold of the regime (at least 0)."""
    pd_places: int = 2
    """The same for PD (at least 2)."""

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "tpp": round(self.tpp, max(2, self.tpp_places)),
            "pd": None if self.pd is None else round(self.pd, max(2, self.pd_places)),
            "class": self.cls,
            "reason": self.reason,
            "regime": self.regime,
        }


def _prong_holds(prong: Prong, acc: Accelerator, regime: Regime) -> tuple[bool, str]:
    """Whether the prong holds, and a note when it was assumed (unknown die area)."""
    if prong.pd is not None and regime.density_prongs_datacenter_only and not acc.datacenter:
        return False, ""
    if prong.tpp is not None and not prong.tpp.holds(acc.exact_tpp):
        return False, ""
    if prong.interconnect_gbps is not None and not prong.interconnect_gbps.holds(acc.interconnect_gbps):
        return False, ""
    if prong.pd is not None:
        pd = acc.exact_pd
        if pd is None:
            return True, "die area unknown: density prong assumed met (conservative)"
        if not prong.pd.holds(pd):
            return False, ""
    return True, ""


def _describe(prong: Prong) -> str:
    parts = []
    if prong.tpp is not None:
        parts.append(f"TPP {prong.tpp}")
    if prong.pd is not None:
        parts.append(f"PD {prong.pd}")
    if prong.interconnect_gbps is not None:
        parts.append(f"interconnect {prong.interconnect_gbps} GB/s")
    return " and ".join(parts)


def classify(acc: Accelerator, regime: Regime) -> Classification:
    """Classify `acc` under `regime`: the first class with a holding prong wins."""
    tpp, pd = acc.tpp, acc.pd
    tp = places(tpp, regime.thresholds("tpp"), 0)
    pp = 2 if pd is None else places(pd, regime.thresholds("pd"), 2)
    shown = f"{tpp:g}"
    if any((float(shown) >= t) != (tpp >= t) for t in regime.thresholds("tpp")):
        shown = f"{tpp:.{tp}f}"  # `g` keeps 6 digits: 4799.9999 would read 4800
    facts = f"TPP {shown}" + (f", PD {pd:.{pp}f}" if pd is not None else ", PD unknown")
    for rule in regime.classes:
        for prong in rule.prongs:
            holds, note = _prong_holds(prong, acc, regime)
            if holds:
                reason = f"{facts}: meets {rule.class_} ({prong.id}: {_describe(prong)})"
                if note:
                    reason += f"; {note}"
                return Classification(acc.name, tpp, pd, rule.class_, reason, regime.name, tp, pp)
    extra = "" if acc.datacenter else "; not a data-center part, so density prongs do not apply"
    return Classification(
        acc.name, tpp, pd, NONE, f"{facts}: below every {regime.name} threshold{extra}", regime.name, tp, pp
    )


def classify_unknown(name: str, regime: Regime) -> Classification:
    """An accelerator missing from the catalog: treated as controlled (the most restrictive class),
    with a TPP above every threshold (a TPP of 0 let `hardware.tpp >= X` rules pass it)."""
    cls = regime.classes[0].class_
    return Classification(
        name,
        UNKNOWN_TPP,
        None,
        cls,
        f"{name!r} is not in the accelerator catalog: treated as {cls}",
        regime.name,
    )
