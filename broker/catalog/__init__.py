"""Accelerator specs and the instance/price catalog (data lives in configs/)."""

from __future__ import annotations

from broker.catalog.accelerators import (
    BITS,
    Accelerator,
    AcceleratorCatalog,
    load_accelerators,
    load_accelerators_text,
    normalize,
)
from broker.catalog.instances import InstanceRow, load_instance_csv, parse_instance_csv
from broker.compliance.classify import Classification, classify

__all__ = [
    "BITS",
    "Accelerator",
    "AcceleratorCatalog",
    "Classification",
    "InstanceRow",
    "classify",
    "load_accelerators",
    "load_accelerators_text",
    "load_instance_csv",
    "normalize",
    "parse_instance_csv",
    "static_offers",
]


def __getattr__(name: str) -> object:
    # static_offers needs broker.policy, which itself imports this package: import lazily.
    if name == "static_offers":
        from broker.catalog.offers import static_offers

        return static_offers
    raise AttributeError(name)
