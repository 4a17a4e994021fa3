"""Static offers from the policy's sites: on-prem partitions at shadow price, cloud catalogs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from broker.catalog.instances import InstanceRow
from broker.model import Offer, SiteId
from broker.policy._policy import Policy
from broker.policy.schema import Partition, Site


def default_slots(count_per_node: int) -> tuple[int, ...]:
    """Every count from one to the node size: Slurm and the local executor give a job exactly the
    accelerators it asks for, and `price_hour` is per accelerator-hour, so a 3-GPU job is offered
    (and priced, and counted against the partition) as 3, not as the next power of two."""
    return tuple(range(1, count_per_node + 1))


def partition_offers(site: Site, part: Partition, *, read_at: datetime | None = None) -> list[Offer]:
    """One offer per slot size of a partition (a CPU-only partition has one, with count 0)."""
    wait = part.expected_wait.total_seconds() if part.expected_wait is not None else 0.0
    sid = SiteId(site.id)
    if part.accelerator is None:
        return [
            Offer(
                site=sid,
                instance_type=part.name,
                accelerator=None,
                count=0,
                price_per_hour=part.price_hour,
                region=site.region,
                cpus=part.cpus_per_node,
                memory_gb=part.memory_gb_per_node,
                free=part.nodes,
                expected_wait_s=wait,
                price_read_at=read_at,
            )
        ]
    offers = []
    for n in part.slot_counts or default_slots(part.count_per_node):
        share = n / part.count_per_node
        offers.append(
            Offer(
                site=sid,
                instance_type=part.name,
                accelerator=part.accelerator,
                count=n,
                price_per_hour=round(part.price_hour * n, 6),
                region=site.region,
                cpus=part.cpus_per_node * share,
                memory_gb=part.memory_gb_per_node * share,
                free=part.nodes * part.count_per_node,
                expected_wait_s=wait,
                price_read_at=read_at,
            )
        )
    return offers


def row_offers(site: Site, row: InstanceRow, *, spot: bool, read_at: datetime | None = None) -> list[Offer]:
    """On-demand and (when priced and enabled) spot offers of one catalog row."""
    markets = []
    if row.price is not None:
        markets.append((row.price, False))
    if spot and row.spot_price is not None:
        markets.append((row.spot_price, True))
    return [
        Offer(
            site=SiteId(site.id),
            instance_type=row.instance_type,
            accelerator=row.accelerator,
            count=row.count,
            price_per_hour=price,
            currency=row.currency,
            spot=is_spot,
            region=row.region,
            zone=row.zone,
            cpus=row.cpus,
            memory_gb=row.memory_gb,
            price_read_at=read_at,
        )
        for price, is_spot in markets
    ]


def static_offers(
    policy: Policy,
    catalog: Mapping[str, Sequence[InstanceRow]] | None = None,
    *,
    read_at: datetime | None = None,
) -> list[Offer]:
    """Every offer the policy's sites make from static data (partitions and catalog CSVs).

    `catalog` overrides the rows loaded with the policy (site id -> rows); `read_at` is
    recorded as each offer's `price_read_at`.
    """
    rows_by_site = policy.instances if catalog is None else catalog
    offers: list[Offer] = []
    for site in policy.sites:
        for part in site.partitions:
            for offer in partition_offers(site, part, read_at=read_at):
                offers.append(offer.model_copy(update={"currency": policy.currency}))
        spot = site.catalog.spot if site.catalog is not None else False
        for row in rows_by_site.get(site.id, ()):
            offers.extend(row_offers(site, row, spot=spot, read_at=read_at))
    return offers
