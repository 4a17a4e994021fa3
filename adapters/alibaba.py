"""Alibaba Cloud ECS adapter (alibabacloud_ecs20140526 on tea-openapi).

Config keys: ``region`` (required), ``access_key_id``/``access_key_secret``/``security_token``
(else the SDK's default credential chain), ``endpoint`` and ``protocol`` (a local double),
``signature_algorithm`` ("v2" for the legacy RPC signature), ``image_id``,
``security_group_id``, ``vswitch_ids`` ({zone: vswitch}) or ``vswitch_id``,
``system_disk_category``, ``internet_max_bandwidth_out``, ``imds_v1`` (default false: the metadata
service in its hardened mode only; ECS has no hop limit), ``broker_id``, ``instance_types``
(see `adapters._catalog`), ``live_prices`` (DescribePrice/DescribeAvailableResource, default
true), ``heartbeat_s``, ``report_give_up_s`` and
``report_backoff_max_s`` (see `adapters.bootstrap`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any

from alibabacloud_credentials.client import Client as CredentialClient
from alibabacloud_credentials.exceptions import CredentialException
from alibabacloud_ecs20140526 import models as ecs
from alibabacloud_ecs20140526.client import Client as EcsClient
from alibabacloud_tea_openapi import models as openapi
from Tea.exceptions import TeaException, UnretryableException

from adapters._catalog import (
    CatalogEntry,
    catalog_offers,
    config_imds,
    config_opt_str,
    config_str,
    parse_catalog,
)
from adapters._codes import ECS_CODES, ECS_PREFIXES, ECS_TYPE_QUOTA, ECS_USER_DATA_LIMIT, classify
from adapters._ecs_gang import EcsGangs
from adapters._gang import client_token, gang_tags, is_gang, parse_gang_id
from adapters._tags import (
    DEFAULT_BROKER_ID,
    TAG_ATTEMPT,
    TAG_BROKER,
    TAG_CANCELLED,
    TAG_TOKEN,
    owned_from_tags,
    ownership_tags,
)
from adapters.base import (
    AdapterError,
    AuthError,
    Capability,
    NotFoundError,
    QuotaError,
    RequestError,
    TransientError,
)
from adapters.bootstrap import bootstrap_options, render_user_data, result_from_console
from broker.model import (
    AttemptState,
    AttemptStatus,
    CapacitySnapshot,
    LaunchRequest,
    Offer,
    OwnedInstance,
    SiteId,
)

ERROR_CODES = ECS_CODES
ERROR_PREFIXES = ECS_PREFIXES


def classify_code(code: str, message: str = "") -> type[AdapterError]:
    """The most specific class for an ECS code; plain AdapterError when unknown."""
    return classify(code, ECS_CODES, ECS_PREFIXES, message)


__all__ = ["ERROR_CODES", "ERROR_PREFIXES", "AlibabaAdapter", "map_ecs_errors"]


@contextmanager
def map_ecs_errors(site: str) -> Iterator[None]:
    """Turn SDK exceptions into the adapter error tree, keeping the ECS code."""
    try:
        yield
    except AdapterError:
        raise
    except CredentialException as exc:
        raise AuthError(site, "NoCredentials", str(exc)) from exc
    except UnretryableException as exc:  # connection refused, timeout, DNS …
        if "unable to load credentials" in str(exc):  # the default chain found nothing
            raise AuthError(site, "NoCredentials", str(exc)) from exc
        raise TransientError(site, "ConnectionError", str(exc)) from exc
    except TeaException as exc:
        code = str(getattr(exc, "code", "") or "Unknown")
        message = str(getattr(exc, "message", "") or exc)
        raise classify_code(code, message)(site, code, message) from exc
    except (ConnectionError, TimeoutError) as exc:
        raise TransientError(site, type(exc).__name__, str(exc)) from exc


_IN_STOCK = frozenset({"WithStock", "ClosedWithStock"})
"""DescribeAvailableResource's StatusCategory values that still sell: ClosedWithStock is "in
insufficient stock" (Status Available), where GPU types often stand; WithoutStock and
ClosedWithoutStock are sold out."""

_RUNNING = {
    "Pending": AttemptState.PENDING,
    "Starting": AttemptState.PENDING,
    "Running": AttemptState.RUNNING,
}


class AlibabaAdapter(EcsGangs):
    """ECS instances, one per attempt (N in a deployment set for a gang), marked with tags."""

    def __init__(
        self,
        site: SiteId,
        config: Mapping[str, Any],
        *,
        client: EcsClient | None = None,
        endpoint: str | None = None,
        protocol: str | None = None,
    ) -> None:
        self.site = site
        self.region = config_str(site, config, "region")
        self.broker_id = config_str(site, config, "broker_id", DEFAULT_BROKER_ID)
        self.catalog: tuple[CatalogEntry, ...] = parse_catalog(site, config)
        self.live_prices = bool(config.get("live_prices", True))
        self.boot = bootstrap_options(config)
        self.imds_v1 = config_imds(site, config)[0]
        self._config = dict(config)
        self._client = client or self._make_client(endpoint, protocol)

    def _make_client(self, endpoint: str | None, protocol: str | None) -> EcsClient:
        cfg = openapi.Config(region_id=self.region)
        ak = config_opt_str(self.site, self._config, "access_key_id")
        if ak:
            cfg.access_key_id = ak
            cfg.access_key_secret = config_str(self.site, self._config, "access_key_secret")
            cfg.security_token = config_opt_str(self.site, self._config, "security_token")
        else:
            with map_ecs_errors(self.site):
                cfg.credential = CredentialClient()  # the SDK's default chain (env, profile, RAM role)
        cfg.endpoint = endpoint or config_opt_str(self.site, self._config, "endpoint")
        cfg.protocol = protocol or config_opt_str(self.site, self._config, "protocol") or "https"
        cfg.signature_algorithm = config_opt_str(self.site, self._config, "signature_algorithm")
        cfg.connect_timeout = 5000
        cfg.read_timeout = 30000
        return EcsClient(cfg)

    # --- Adapter protocol ---------------------------------------------------------------------

    def unsupported(self) -> Mapping[Capability, str]:
        reasons = {
            Capability.CAPACITY: "ECS reports stock per zone, not free accelerators or a queue",
            Capability.QUEUES_JOBS: "an ECS instance starts or fails; nothing waits in a queue",
        }
        if not self.live_prices:
            reasons[Capability.LIVE_PRICES] = "live_prices is off in this site's config"
            reasons[Capability.STOCK] = "live_prices is off, so DescribeAvailableResource is not called"
        return reasons

    def offers(self, now: datetime) -> Sequence[Offer]:
        static = catalog_offers(self.site, self.catalog, region=self.region, currency="CNY", read_at=None)
        if not self.live_prices or not static:
            return static
        # ECS keeps spot stock apart from pay-as-you-go stock: each market's offers read their own.
        stocks = {spot: self._stock(spot) for spot in sorted({o.spot for o in static})}
        prices: dict[tuple[str, bool], float] = {}
        offers = []
        for offer in static:
            key = (offer.instance_type, offer.spot)
            if key not in prices:
                prices[key] = self._price(offer.instance_type, offer.spot)
            stock = stocks[offer.spot]
            zones = [offer.zone] if offer.zone else sorted(z for (z, t) in stock if t == offer.instance_type)
            for zone in zones or [""]:
                has_stock = stock.get((zone, offer.instance_type))
                free = None if has_stock else 0
                offers.append(
                    offer.model_copy(
                        update={
                            "zone": zone,
                            "price_per_hour": prices[key],
                            "price_read_at": now,
                            "free": free,
                        }
                    )
                )
        return offers

    def capacity(self, now: datetime) -> CapacitySnapshot | None:
        return None

    def submit(self, request: LaunchRequest) -> str:
        existing = None if request.first_call else self._launched(request)
        if existing is not None:
            return existing
        offer = request.offer
        tags = {**ownership_tags(self.broker_id, request), **gang_tags(request)}
        user_data = render_user_data(request, **self.boot)
        size = len(user_data.encode())
        if size > ECS_USER_DATA_LIMIT:
            # Checked before calling: ECS would refuse it as InvalidUserData.SizeExceeded.
            raise RequestError(
                self.site, "UserDataTooLarge", f"user data is {size} bytes; ECS allows {ECS_USER_DATA_LIMIT}"
            )
        zone = offer.zone or None
        vswitches = self._config.get("vswitch_ids") or {}
        req = ecs.RunInstancesRequest(
            region_id=self.region,
            zone_id=zone,
            instance_type=offer.instance_type,
            image_id=config_opt_str(self.site, self._config, "image_id"),
            security_group_id=config_opt_str(self.site, self._config, "security_group_id"),
            v_switch_id=(vswitches.get(zone) if zone else None)
            or config_opt_str(self.site, self._config, "vswitch_id"),
            instance_name=f"szb-{request.attempt_id}"[:128],
            client_token=client_token(request),
            deployment_set_id=request.group or None,
            amount=1,
            instance_charge_type="PostPaid",
            spot_strategy="SpotAsPriceGo" if offer.spot else "NoSpot",
            user_data=base64.b64encode(user_data.encode()).decode(),
            internet_max_bandwidth_out=self._config.get("internet_max_bandwidth_out"),
            tag=[ecs.RunInstancesRequestTag(key=k, value=v) for k, v in tags.items()],
            http_endpoint="enabled",
            http_tokens="optional" if self.imds_v1 else "required",  # (ECS sets no hop limit)
        )
        disk = config_opt_str(self.site, self._config, "system_disk_category")
        if disk:
            req.system_disk = ecs.RunInstancesRequestSystemDisk(category=disk)
        try:
            with map_ecs_errors(self.site):
                body = self._client.run_instances(req).body.to_map()
        except QuotaError as exc:
            if exc.code == ECS_TYPE_QUOTA:  # ECS's elastic quota counts this instance type only
                exc.types = (offer.instance_type,)
            raise
        ids = body.get("InstanceIdSets", {}).get("InstanceIdSet", [])
        if not ids:
            raise AdapterError(self.site, "NoInstanceReturned", f"RunInstances returned no id: {body}")
        return str(ids[0])

    def status(self, backend_id: str) -> AttemptStatus:
        found = self._describe(instance_ids=[backend_id])
        if not found:
            raise NotFoundError(self.site, "InvalidInstanceId.NotFound", f"{backend_id} does not exist")
        status = _status_of(found[0])
        # Stopped before its agent reported, removed by the broker, or a spot instance reclaimed
        # (Recycling) after its job ended: the job's own result on the console says what it did.
        if status.state in (AttemptState.LOST, AttemptState.CANCELLED, AttemptState.PREEMPTED):
            return self._console_result(found[0]) or status
        return status

    def kept_result(self, backend_id: str) -> AttemptStatus | None:
        """The result the instance's bootstrap printed to its console (`adapters.base.KeptResult`)."""
        found = self._describe(instance_ids=[backend_id])
        return self._console_result(found[0]) if found else None

    def _console_result(self, inst: Mapping[str, Any]) -> AttemptStatus | None:
        """The result the bootstrap printed to the console (GetInstanceConsoleOutput), if any."""
        attempt = _tags_of(inst).get(TAG_ATTEMPT)
        if not attempt:
            return None
        req = ecs.GetInstanceConsoleOutputRequest(region_id=self.region, instance_id=str(inst["InstanceId"]))
        try:
            with map_ecs_errors(self.site):
                body = self._client.get_instance_console_output(req).body.to_map()
        except TransientError:
            raise  # no evidence yet: the poll asks again
        except AdapterError:
            return None
        text = base64.b64decode(body.get("ConsoleOutput") or "").decode("utf-8", "replace")
        return result_from_console(text, attempt)

    def cancel(self, backend_id: str, token: str) -> None:
        gang = parse_gang_id(backend_id)
        if gang is not None:
            return self.cancel_gang(gang, token)
        try:
            with map_ecs_errors(self.site):
                self._client.delete_instances(
                    ecs.DeleteInstancesRequest(
                        region_id=self.region,
                        instance_id=[backend_id],
                        force=True,
                        client_token=token[:64],
                    )
                )
        except NotFoundError:
            return

    def list_owned(self) -> Sequence[OwnedInstance]:
        owned = []
        for inst in self._describe(tags={TAG_BROKER: self.broker_id}):
            tags = _tags_of(inst)
            stopped = str(inst.get("Status", "")) in ("Stopping", "Stopped")
            state = _status_of(inst).state
            owned.append(owned_from_tags(self.site, str(inst["InstanceId"]), tags, state, stopped=stopped))
        return [*owned, *self.listed_groups()]  # after the instances: a group empties first

    # --- helpers ------------------------------------------------------------------------------

    def _errors(self) -> AbstractContextManager[None]:
        return map_ecs_errors(self.site)

    def _launched(self, request: LaunchRequest) -> str | None:
        """What an earlier call under this launch's token (and rank) already started."""
        if is_gang(request):
            return self.find_node(request.token, request.node_rank)
        return self.find_by_token(request.token)

    def find_by_token(self, token: str) -> str | None:
        """The instance already started for this token, if any (ClientToken is the first guard)."""
        found = self._describe(tags={TAG_BROKER: self.broker_id, TAG_TOKEN: token})
        return str(found[0]["InstanceId"]) if found else None

    def _describe(
        self, *, instance_ids: list[str] | None = None, tags: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            req = ecs.DescribeInstancesRequest(
                region_id=self.region,
                instance_ids=json.dumps(instance_ids) if instance_ids else None,
                tag=[ecs.DescribeInstancesRequestTag(key=k, value=v) for k, v in (tags or {}).items()]
                or None,
                page_number=page,
                page_size=100,
            )
            with map_ecs_errors(self.site):
                body = self._client.describe_instances(req).body.to_map()
            batch = body.get("Instances", {}).get("Instance", [])
            out.extend(batch)
            if not batch or len(out) >= int(body.get("TotalCount", 0)):
                return out
            page += 1

    def _stock(self, spot: bool) -> dict[tuple[str, str], bool]:
        """(zone, type) → has stock in the market (spot or pay-as-you-go), from
        DescribeAvailableResource."""
        req = ecs.DescribeAvailableResourceRequest(
            region_id=self.region,
            destination_resource="InstanceType",
            instance_charge_type="PostPaid",
            spot_strategy="SpotAsPriceGo" if spot else None,
        )
        with map_ecs_errors(self.site):
            body = self._client.describe_available_resource(req).body.to_map()
        stock: dict[tuple[str, str], bool] = {}
        for zone in body.get("AvailableZones", {}).get("AvailableZone", []):
            for res in zone.get("AvailableResources", {}).get("AvailableResource", []):
                for sup in res.get("SupportedResources", {}).get("SupportedResource", []):
                    stock[(zone["ZoneId"], sup["Value"])] = sup.get("StatusCategory") in _IN_STOCK
        return stock

    def _price(self, instance_type: str, spot: bool) -> float:
        req = ecs.DescribePriceRequest(
            region_id=self.region,
            resource_type="instance",
            instance_type=instance_type,
            price_unit="Hour",
            spot_strategy="SpotAsPriceGo" if spot else None,
        )
        with map_ecs_errors(self.site):
            body = self._client.describe_price(req).body.to_map()
        return float(body["PriceInfo"]["Price"]["TradePrice"])


def _tags_of(inst: Mapping[str, Any]) -> dict[str, str]:
    return {t["TagKey"]: t.get("TagValue", "") for t in inst.get("Tags", {}).get("Tag", [])}


def _status_of(inst: Mapping[str, Any]) -> AttemptStatus:
    status = str(inst.get("Status", ""))
    locks = [lock.get("LockReason") for lock in inst.get("OperationLocks", {}).get("LockReason", [])]
    if "Recycling" in locks:
        # ECS's spot interruption notice: the instance, often still up, is locked for
        # Recycling and released about 5 minutes later. The attempt is over (requeue now), but
        # the instance is ECS's to release: the job may use those minutes to save a checkpoint.
        message = f"spot instance interrupted (Recycling); ECS status {status}"
        up = status not in ("Stopping", "Stopped")
        return AttemptStatus(state=AttemptState.PREEMPTED, message=message, reclaiming=up)
    if status in _RUNNING:
        return AttemptStatus(state=_RUNNING[status], message=f"ECS status {status}")
    if TAG_CANCELLED in _tags_of(inst):
        return AttemptStatus(state=AttemptState.CANCELLED, message=f"cancelled; ECS status {status}")
    return AttemptStatus(state=AttemptState.LOST, message=f"ECS status {status} before the job reported")
