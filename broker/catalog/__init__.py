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

__all__ = [
    "BITS",
    "Accelerator",
    "AcceleratorCatalog",
    "InstanceRow",
    "load_accelerators",
    "load_accelerators_text",
    "load_instance_csv",
    "normalize",
    "parse_instance_csv",
]

