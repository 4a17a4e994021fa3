"""The offer source: catalog offers with live on-prem capacity and live cloud prices.

Adapters are asked only in a worker thread, one read at a time (callers of a read in flight
join it), so a slow backend never holds up the event loop or the RPCs on it. Callers that
must answer promptly (status, explain) wait a bounded time and otherwise get the last reading.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from adapters.base import Adapter, AdapterError, AuthError, Capability, ConfigError
from broker.burst import is_onprem
from broker.burst.projection import NEVER_S
from broker.burst.snapshot import partition_key
from broker.catalog.instances import InstanceRow
from broker.clock import Clock
from broker.dispatch.health import SiteHealth
from broker.model import Attempt, AttemptState, CapacitySnapshot, Offer, SiteId
from broker.policy import Policy
from broker.policy.offers import static_offers
from broker.waiting import within

log = logging.getLogger(__name__)

CLOUD_OFFERS_TTL_S = 60.0
"""Live cloud prices and stock are re-read at most this often per site."""


@dataclass(frozen=True)
class OfferReading:
    """One read of every site: offers (on-prem ones with free units and waits) and partition totals."""

    offers: list[Offer]
    totals: dict[str, int] = field(default_factory=dict)
    read_at: datetime | None = None
    """When the adapters were asked; None for the catalog alone (nothing read yet)."""
    started: frozenset[tuple[str, str]] = frozenset()
    """(site, backend id) of the broker's jobs the on-prem backends said they run
    (`CapacitySnapshot.started`)."""
    started_complete: frozenset[str] = frozenset()
    """Sites whose `started` names every job of the broker's holding units there
    (`CapacitySnapshot.started_complete`)."""


class OfferSource:
    """Reads offers from the adapters off the event loop; keeps the last reading."""

    def __init__(self, policy: Callable[[], Policy], clock: Clock, health: SiteHealth) -> None:
        self._policy = policy
        self.clock = clock
        self.health = health
        self.adapters: Mapping[SiteId, Adapter] = {}
        self._catalog: tuple[str, list[Offer]] | None = None
        self._cloud: dict[str, tuple[datetime, list[Offer]]] = {}
        self._cloud_failed: dict[str, datetime] = {}
        self._latest: OfferReading | None = None
        self._inflight: asyncio.Future[OfferReading] | None = None
        self._set_aside: set[asyncio.Future[OfferReading]] = set()
        self.adopted: OfferReading | None = None
        """On an `api` replica: on-prem offers as the active scheduler last read them."""

    def catalog(self) -> list[Offer]:
        """The policy's static offers, built once per policy (priced when the policy was read)."""
        policy = self._policy()
        if self._catalog is None or self._catalog[0] != policy.version:  # a price catalog may have changed
            self._catalog = (policy.version, static_offers(policy, read_at=self.clock.now()))
        return self._catalog[1]

    def no_images(self) -> dict[SiteId, str]:
        """Sites whose adapter cannot run a job's container image, with the adapter's reason."""
        out: dict[SiteId, str] = {}
        for site_id, adapter in list(self.adapters.items()):
            why = adapter.unsupported().get(Capability.CONTAINER_IMAGES)
            if why is not None:
                out[site_id] = why
        return out

    def latest(self) -> OfferReading:
        """The last reading (never asks a backend); the catalog alone before the first one."""
        return self._latest if self._latest is not None else OfferReading(self.catalog())

    async def fresh(self) -> OfferReading:
        """A reading taken now (or joined while in flight), however long the backends take."""
        return await asyncio.shield(self._start_read())

    async def current(self, wait_s: float) -> OfferReading:
        """A fresh reading if the backends answer within `wait_s`, else the last one."""
        try:
            return await within(asyncio.shield(self._start_read()), wait_s)
        except TimeoutError:
            return self.latest()

    def _start_read(self) -> asyncio.Future[OfferReading]:
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(asyncio.to_thread(self.read, self.clock.now()))
            self._inflight.add_done_callback(self._keep)
        return self._inflight

    def forget(self, site: str) -> None:
        """Drop what was read from a site's adapter (a new one replaced it): the next read asks it.
        A read already in flight may have asked the old adapter: it is left to finish unheeded."""
        self._cloud.pop(site, None)
        self._cloud_failed.pop(site, None)
        if self._inflight is not None and not self._inflight.done():
            self._set_aside.add(self._inflight)
        self._inflight = None

    def _keep(self, done: asyncio.Future[OfferReading]) -> None:
        if done in self._set_aside:  # `forget` set it aside: it may hold the old adapter's offers
            self._set_aside.discard(done)
            return
        if not done.cancelled() and done.exception() is None:
            self._latest = done.result()

    def adopt(self, reading: OfferReading) -> None:
        """Take the active scheduler's on-prem reading (a replica asks no backend itself)."""
        self.adopted = reading
        self._latest = self.read(self.clock.now())

    def read(self, now: datetime) -> OfferReading:
        """Ask every adapter (blocking: call it in a worker thread, never on the event loop)."""
        policy = self._policy()
        capacity = self._capacities(policy, now)
        live_sites = self._cloud_offers(policy, now)
        offers = [o for o in self.catalog() if o.site not in live_sites]
        for site_offers in live_sites.values():
            offers.extend(site_offers)
        adopted = self.adopted
        if adopted is not None:
            read = {o.site for o in adopted.offers}
            kept = [o for o in offers if o.site not in read]
            return OfferReading([*kept, *adopted.offers], dict(adopted.totals), adopted.read_at)
        out, totals = _with_capacity(offers, capacity)
        started = frozenset((site, b) for site, snap in capacity.items() for b in snap.started)
        complete = frozenset(site for site, snap in capacity.items() if snap.started_complete)
        return OfferReading(out, totals, now, started, complete)

    def _capacities(self, policy: Policy, now: datetime) -> dict[str, CapacitySnapshot]:
        """On-prem free capacity and queues per site; a site that cannot say is unhealthy."""
        capacity: dict[str, CapacitySnapshot] = {}
        # (A copy: this runs in a worker thread while a reload may add a site on the event loop.)
        for site_id, adapter in list(self.adapters.items()):
            if not is_onprem(policy, site_id) or Capability.CAPACITY in adapter.unsupported():
                continue
            try:
                snap = adapter.capacity(now)
            except AdapterError as exc:
                self.health.mark_unhealthy(site_id, f"capacity unavailable: {exc}")
                continue
            self.health.mark_healthy(site_id)
            if snap is not None:
                capacity[site_id] = snap
        return capacity

    def _cloud_offers(self, policy: Policy, now: datetime) -> dict[str, list[Offer]]:
        """Live offers per cloud site (cached for a minute; a failing site is not asked every pass)."""
        live_sites: dict[str, list[Offer]] = {}
        for site_id, adapter in list(self.adapters.items()):
            if is_onprem(policy, site_id):
                continue
            cached = self._cloud.get(site_id)
            if cached is not None and (now - cached[0]).total_seconds() < CLOUD_OFFERS_TTL_S:
                live_sites[site_id] = cached[1]
                continue
            failed = self._cloud_failed.get(site_id)
            if failed is not None and (now - failed).total_seconds() < CLOUD_OFFERS_TTL_S:
                continue  # asking again every pass would only repeat the same error
            try:
                fresh = [
                    o.model_copy(update={"price_read_at": o.price_read_at or now})
                    for o in adapter.offers(now)
                ]
            except (AuthError, ConfigError) as exc:
                # No credentials or a wrong profile: the site is out of service, visibly, until
                # a later read succeeds; the broker and every other site carry on.
                self._cloud_failed[site_id] = now
                if self.health.unhealthy.get(site_id) is None:
                    log.error("site %s out of service: %s", site_id, exc, extra={"site": site_id})
                self.health.mark_unhealthy(site_id, f"{type(exc).__name__} {exc.code}: {exc.message}"[:300])
                continue
            except AdapterError as exc:
                log.info("offers of %s unavailable, using the catalog: %s", site_id, exc)
                continue
            self._cloud_failed.pop(site_id, None)
            self.health.mark_healthy(site_id)
            if fresh:
                if self.adapters.get(site_id) is adapter:  # not replaced by a reload meanwhile
                    self._cloud[site_id] = (now, fresh)
                live_sites[site_id] = fresh
        return live_sites


def _with_capacity(
    offers: list[Offer], capacity: Mapping[str, CapacitySnapshot]
) -> tuple[list[Offer], dict[str, int]]:
    """On-prem offers with their partition's free units and expected wait; partition totals."""
    totals: dict[str, int] = {}
    out = []
    for offer in offers:
        snap = capacity.get(offer.site)
        part = None
        if snap is not None:
            part = next(
                (p for p in snap.partitions if p.name == offer.instance_type), None
            ) or snap.partition_for(offer.accelerator)
        if part is None:
            out.append(offer)
            continue
        totals[partition_key(offer)] = part.total
        wait = part.expected_wait_s
        if wait is None:
            backlog = part.running_accelerator_hours_left + part.queued_accelerator_hours
            # No usable units (every node drained, say): never, as status and explain say, not 0.
            wait = backlog / part.total * 3600 if part.total else NEVER_S
        update = {"free": part.free, "expected_wait_s": wait, "releases": part.releases,
                  "free_by_node": part.free_by_node, "stranded": part.stranded, "queued": part.queued}
        out.append(offer.model_copy(update=update))
    return out, totals


def instance_types(rows: Sequence[InstanceRow], *, spot: bool = True) -> list[dict[str, Any]]:
    """A site's catalog rows as the cloud adapters' `instance_types` config.

    One entry per instance type and prices, with the zones that sell at them: zones priced
    alike share an entry, a zone with prices of its own (spot prices differ zone by zone)
    keeps them. `spot` is the site catalog's switch: off, no entry carries a spot price, so
    the adapter offers (and launches) on demand only, as the static catalog does.
    """
    by_prices: dict[tuple[str, float, float | None], dict[str, Any]] = {}
    for row in rows:
        if row.price is None:
            continue
        spot_price = row.spot_price if spot else None
        key = (row.instance_type, row.price, spot_price)
        entry = by_prices.get(key)
        if entry is None:
            entry = by_prices[key] = {
                "instance_type": row.instance_type,
                "accelerator": row.accelerator,
                "count": row.count,
                "price_per_hour": row.price,
                "cpus": row.cpus,
                "memory_gb": row.memory_gb,
                "zones": [],
            }
            if spot_price is not None:
                entry["spot_price_per_hour"] = spot_price
        if row.zone and row.zone not in entry["zones"]:
            entry["zones"].append(row.zone)
    return list(by_prices.values())


def site_configs(policy: Policy) -> list[tuple[SiteId, str, dict[str, Any]]]:
    """Each site's adapter name and config: partitions, region, catalog instance types, overrides."""
    out = []
    for site in policy.sites:
        config: dict[str, Any] = {
            "partitions": [p.model_dump(mode="json") for p in site.partitions],
            "region": site.region,
            "zones": list(site.zones),
            "provider": site.provider,
            "instance_types": instance_types(
                policy.instances.get(site.id, ()), spot=site.catalog is not None and site.catalog.spot
            ),
            **site.adapter_config,
        }
        if site.catalog is not None and "currency" not in config:
            config["currency"] = site.catalog.currency
        out.append((SiteId(site.id), site.adapter, config))
    return out


def started_attempts(reading: OfferReading, live: Sequence[Attempt]) -> frozenset[str]:
    """The live attempts pending in the store that their backend said it runs in `reading`."""
    return frozenset(
        a.id for a in live if a.state == AttemptState.PENDING and (a.site, a.backend_id) in reading.started
    )


def ended_attempts(reading: OfferReading, live: Sequence[Attempt]) -> frozenset[str]:
    """The live attempts in the store that their backend no longer runs in `reading` (a status
    poll has yet to say): their units read free. Only sites that name all they run can say."""
    return frozenset(
        a.id for a in live
        if a.site in reading.started_complete and a.backend_id is not None
        and (a.site, a.backend_id) not in reading.started
    )
