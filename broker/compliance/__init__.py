"""Export-control classification (TPP/PD under a data-driven regime) and rule evaluation."""

from __future__ import annotations

from broker.compliance.classify import NONE, UNKNOWN, Classification, classify, classify_unknown
from broker.compliance.regime import (
    Bound,
    ClassRule,
    Prong,
    Regime,
    RegimeSet,
    load_regimes,
    load_regimes_text,
)

__all__ = [
    "NONE",
    "UNKNOWN",
    "Bound",
    "ClassRule",
    "Classification",
    "Prong",
    "Regime",
    "RegimeSet",
    "classify",
    "classify_unknown",
    "load_regimes",
    "load_regimes_text",
]
