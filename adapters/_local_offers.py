"""What the local executor offers: one offer per partition of its declared inventory, at its
shadow prices, and the capabilities a host's processes do not have."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from adapters._local_launch import NO_IMAGES
from adapters.base import Capability
from broker.model import CapacitySnapshot, Offer, SiteId

UNSUPPORTED: Mapping[Capability, str] = {
    Capability.SPOT: "local processes are never preempted, so there is no spot market",
    Capability.CONTAINER_IMAGES: NO_IMAGES,
    Capability.LIVE_PRICES: "local capacity is charged at its configured shadow price",
    Capability.STOCK: "local capacity is reported through capacity(), not zone stock",
    Capability.QUEUES_JOBS: "a local process starts at once or fails; nothing queues here",
}


def local_offers(
    site: SiteId, snap: CapacitySnapshot, prices: tuple[float, float, str], cpus: float, now: datetime
) -> list[Offer]:
    """An offer per partition of `snap`; `prices` = (per accelerator hour, per CPU hour, currency)."""
    accel_price, cpu_price, currency = prices
    return [
        Offer(
            site=site,
            instance_type=f"local-{part.name}",
            accelerator=part.accelerator,
            count=part.total if part.accelerator else 0,
            price_per_hour=accel_price if part.accelerator else cpu_price,
            currency=currency,
            cpus=cpus,
            free=part.free,
            price_read_at=now,
        )
        for part in snap.partitions
    ]
