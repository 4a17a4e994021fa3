"""The static instance-type catalog a cloud site declares in its config, turned into Offers.

Config shape (`instance_types:` in a site's config)::

    instance_types:
      - instance_type: p4d.24xlarge
        accelerator: A100-40GB      # None/absent for CPU-only types
        count: 8                    # accelerators per instance
        price_per_hour: 32.7726     # on-demand, in the site's currency
        spot_price_per_hour: 12.0   # optional; present => a spot offer too
        cpus: 96
        memory_gb: 1152
        accelerator_memory_gb: 40
        zones: [us-east-1a, us-east-1b]   # optional; one offer per zone
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adapters.base import ConfigError
from broker.model import Offer, SiteId


class CatalogEntry(BaseModel):
    """One instance type a site offers, with its static (catalog) prices."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    instance_type: str = Field(min_length=1)
    accelerator: str | None = None
    count: int = Field(default=0, ge=0)
    price_per_hour: float = Field(ge=0)
    spot_price_per_hour: float | None = Field(default=None, ge=0)
    """Static spot price; when absent the type is offered on demand only."""
    cpus: float = 0
    memory_gb: float = 0
    accelerator_memory_gb: float = 0
    zones: tuple[str, ...] = ()
    """Zones to offer it in; empty means "anywhere in the region" (zone chosen by the cloud)."""


def parse_catalog(site: SiteId, config: Mapping[str, Any]) -> tuple[CatalogEntry, ...]:
    """Validate `config["instance_types"]`; a bad entry is a ConfigError naming it."""
    raw = config.get("instance_types", ())
    if not isinstance(raw, list | tuple):
        raise ConfigError(site, "InvalidConfig", "instance_types must be a list")
    entries = []
    for i, item in enumerate(raw):
        try:
            entries.append(CatalogEntry.model_validate(item))
        except ValidationError as exc:
            raise ConfigError(site, "InvalidConfig", f"instance_types[{i}]: {exc}") from exc
    return tuple(entries)


def catalog_offers(
    site: SiteId,
    entries: Iterable[CatalogEntry],
    *,
    region: str,
    currency: str,
    read_at: datetime | None,
) -> list[Offer]:
    """One on-demand offer (and a spot one when priced) per entry and zone."""
    offers = []
    for entry in entries:
        markets: list[tuple[bool, float]] = [(False, entry.price_per_hour)]
        if entry.spot_price_per_hour is not None:
            markets.append((True, entry.spot_price_per_hour))
        for zone in entry.zones or ("",):
            for spot, price in markets:
                offers.append(
                    Offer(
                        site=site,
                        instance_type=entry.instance_type,
                        accelerator=entry.accelerator,
                        count=entry.count,
                        price_per_hour=price,
                        currency=currency,
                        spot=spot,
                        region=region,
                        zone=zone,
                        cpus=entry.cpus,
                        memory_gb=entry.memory_gb,
                        accelerator_memory_gb=entry.accelerator_memory_gb,
                        price_read_at=read_at,
                    )
                )
    return offers


def config_str(site: SiteId, config: Mapping[str, Any], key: str, default: str | None = None) -> str:
    """A required (or defaulted) string config value; ConfigError when missing or not a string."""
    value = config.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(site, "InvalidConfig", f"config key {key!r} must be a non-empty string")
    return value


def config_opt_str(site: SiteId, config: Mapping[str, Any], key: str) -> str | None:
    value = config.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(site, "InvalidConfig", f"config key {key!r} must be a string")
    return value


def config_imds(site: SiteId, config: Mapping[str, Any]) -> tuple[bool, int]:
    """(`imds_v1`, `imds_hop_limit`): the instances' metadata service is IMDSv2 only unless
    `imds_v1` (a job's HTTP client tricked into a plain GET, SSRF, must not read the instance
    profile's keys), within `imds_hop_limit` hops (1: not from a container on the instance)."""
    v1 = config.get("imds_v1", False)
    hops = config.get("imds_hop_limit", 1)
    if not isinstance(v1, bool):
        raise ConfigError(site, "InvalidConfig", f"config key 'imds_v1' must be true or false, not {v1!r}")
    if isinstance(hops, bool) or not isinstance(hops, int) or not 1 <= hops <= 64:
        raise ConfigError(site, "InvalidConfig", f"config key 'imds_hop_limit' must be 1 to 64, not {hops!r}")
    return v1, hops
