"""The Slurm site's partitions: one Slurm partition per accelerator model (or CPU-only).

Two spellings are accepted for ``partitions``:

* the policy's list, as the broker's Planner passes it (``site.partitions`` dumped):
  ``[{name: a800, accelerator: A800, count_per_node: 4, price_hour: 14.0, …}, …]``;
  the partition ``name`` is the Slurm partition name;
* a mapping ``{partition: accelerator}`` or ``{partition: {accelerator, gres_type,
  price_per_accelerator_hour, accelerator_memory_gb}}``.

``accelerator: null`` marks a CPU partition. The Slurm gres type that counts a partition's
accelerators comes from the partition's ``gres_type``, else the site-level ``gres_types``
mapping (keyed by partition name or accelerator name: ``{Ascend910B: ascend910b}``), else
the one type the partition's nodes carry, else the accelerator name in lower case
(``A800`` -> ``a800``, ``Ascend910B`` -> ``ascend910b``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapters.base import ConfigError, UnsupportedError
from broker.model import LaunchRequest, SiteId


@dataclass(frozen=True)
class PartitionConfig:
    name: str
    accelerator: str | None
    gres_type: str | None
    price_per_accelerator_hour: float
    accelerator_memory_gb: float = 0.0


def default_gres_type(accelerator: str) -> str:
    """The gres type a policy accelerator name maps to when none is configured."""
    return accelerator.lower()


def parse_partitions(site: SiteId, config: Mapping[str, Any]) -> dict[str, PartitionConfig]:
    """Partitions by Slurm name, from the list (policy) or mapping form of ``partitions``."""
    raw = config.get("partitions")
    default_price = float(config.get("price_per_accelerator_hour", 0.0))
    gres_types = {str(k): str(v) for k, v in dict(config.get("gres_types") or {}).items()}
    items: list[tuple[str, Any]]
    if isinstance(raw, Mapping):
        items = [(str(name), value) for name, value in raw.items()]
    elif isinstance(raw, list | tuple):
        items = []
        for entry in raw:
            if not isinstance(entry, Mapping) or not entry.get("name"):
                raise ConfigError(site, "BadPartition", f"partition entry without a name: {entry!r}")
            items.append((str(entry["name"]), entry))
    else:
        items = []
    if not items:
        raise ConfigError(site, "MissingPartitions",
                          "slurm adapter needs partitions: [{name, accelerator, …}] (the policy's) "
                          "or {partition: accelerator or {accelerator, gres_type, …}}")
    parts: dict[str, PartitionConfig] = {}
    for name, value in items:
        if isinstance(value, Mapping):
            accel = str(value["accelerator"]) if value.get("accelerator") else None
            gres = (value.get("gres_type") or gres_types.get(name)
                    or (gres_types.get(accel) if accel else None))
            price = value.get("price_per_accelerator_hour", value.get("price_hour", default_price))
            parts[name] = PartitionConfig(
                name=name,
                accelerator=accel,
                gres_type=str(gres) if gres and accel else None,
                price_per_accelerator_hour=float(price),
                accelerator_memory_gb=float(value.get("accelerator_memory_gb", 0.0)),
            )
        else:
            accel = str(value) if value else None
            gres = gres_types.get(name) or (gres_types.get(accel) if accel else None)
            parts[name] = PartitionConfig(name, accel, gres if accel else None, default_price)
    return parts


def partition_for(
    site: SiteId,
    partitions: Mapping[str, PartitionConfig],
    cpu_partition: str | None,
    images: bool,
    request: LaunchRequest,
) -> PartitionConfig:
    """The partition an attempt is submitted to; UnsupportedError when none here can run it."""
    offer, spec = request.offer, request.spec
    part: PartitionConfig | None = partitions.get(offer.instance_type)
    if part is None and offer.accelerator:
        part = next((p for p in partitions.values() if p.accelerator == offer.accelerator), None)
    if part is None and spec.accelerator_count == 0:
        name = cpu_partition or next(iter(partitions))
        part = partitions.get(name)
    if part is None:
        raise UnsupportedError(site, "NoSuchPartition",
                               f"no partition here for {offer.instance_type!r} / {offer.accelerator!r}")
    if spec.accelerator_count and part.accelerator is None:
        raise UnsupportedError(site, "NoAccelerators",
                               f"partition {part.name} has no accelerators")
    if spec.image and not images:
        raise UnsupportedError(site, "ImagesUnsupported",
                               "no container_runtime configured for this Slurm cluster")
    return part
