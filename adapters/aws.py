"""AWS EC2 adapter for both partitions: `aws` and `aws-cn` (cn-north-1, cn-northwest-1).

The partition follows from the region. China regions are separate accounts: give them their
own ``profile`` or keys, and their catalog prices in CNY (``currency`` defaults by partition).

Config keys: ``region`` (required), ``partition`` (optional; checked against the region),
``profile`` or ``access_key_id``/``secret_access_key``/``session_token``, ``endpoint_url``
(moto), ``image_id``, ``subnet_id``, ``security_group_ids``, ``key_name``,
``iam_instance_profile`` (name), ``imds_v1`` (default false: IMDSv2 only) and ``imds_hop_limit``
(default 1), ``broker_id``, ``currency``, ``instance_types`` (see
`adapters._catalog`), ``live_prices`` (spot price history, default true), ``heartbeat_s``,
``report_give_up_s`` and ``report_backoff_max_s`` (see `adapters.bootstrap`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
    ProfileNotFound,
)
from botocore.parsers import ResponseParserError

from adapters._aws_gang import Ec2Gangs
from adapters._aws_session import Ec2Clients
from adapters._catalog import (
    CatalogEntry,
    catalog_offers,
    config_imds,
    config_opt_str,
    config_str,
    parse_catalog,
)
from adapters._codes import EC2_CODES, EC2_PREFIXES, EC2_USER_DATA_LIMIT, classify, scope_ec2_quota
from adapters._ec2_console import Ec2Console
from adapters._ec2_status import status_of, with_stop_time
from adapters._ec2_terminate import Ec2Terminate
from adapters._gang import client_token, gang_tags, is_gang, parse_gang_id
from adapters._tags import (
    DEFAULT_BROKER_ID,
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
    ConfigError,
    NotFoundError,
    RequestError,
    TransientError,
)
from adapters.bootstrap import bootstrap_options, render_user_data
from broker.model import (
    AttemptState,
    AttemptStatus,
    CapacitySnapshot,
    LaunchRequest,
    Offer,
    OwnedInstance,
    SiteId,
)

if TYPE_CHECKING:
    from mypy_boto3_ec2.client import EC2Client
    from mypy_boto3_ec2.type_defs import InstanceTypeDef
else:
    EC2Client = Any
    InstanceTypeDef = dict

ERROR_CODES = EC2_CODES
ERROR_PREFIXES = EC2_PREFIXES

log = logging.getLogger(__name__)


def classify_code(code: str, message: str = "") -> type[AdapterError]:
    """The most specific class for an EC2 code; plain AdapterError when unknown."""
    return classify(code, EC2_CODES, EC2_PREFIXES, message)


__all__ = ["ERROR_CODES", "ERROR_PREFIXES", "AwsAdapter", "map_ec2_errors", "partition_for_region"]


@contextmanager
def map_ec2_errors(site: str) -> Iterator[None]:
    """Turn botocore exceptions into the adapter error tree, keeping the EC2 code."""
    try:
        yield
    except AdapterError:
        raise
    except ClientError as exc:
        err = exc.response.get("Error", {})
        code = str(err.get("Code") or "Unknown")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if (code == "Unknown" or code.isdigit()) and isinstance(status, int):
            # No EC2 error in the body (a proxy's or load balancer's page): the HTTP status is
            # all there is to go by, and a 5xx is as transient as EC2's own ServiceUnavailable.
            cls = TransientError if status >= 500 else AdapterError
            raise cls(site, f"HTTP{status}", f"HTTP {status} without an EC2 error in the answer") from exc
        message = str(err.get("Message") or exc)
        raise classify_code(code, message)(site, code, message) from exc
    except ResponseParserError as exc:  # not a BotoCoreError: an HTML page where XML was due
        raise TransientError(
            site, "UnparsableAnswer", f"the endpoint's answer is not EC2's XML: {str(exc)[:200]}"
        ) from exc
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise AuthError(site, "NoCredentials", str(exc)) from exc
    except (ProfileNotFound, NoRegionError, ParamValidationError) as exc:
        raise ConfigError(site, type(exc).__name__, str(exc)) from exc
    except (ConnectionError, HTTPClientError) as exc:  # unreachable, read timeout, connection closed
        raise TransientError(site, type(exc).__name__, str(exc)) from exc
    except BotoCoreError as exc:
        raise AdapterError(site, type(exc).__name__, str(exc)) from exc


def partition_for_region(region: str) -> str:
    """`aws-cn` for the China regions, `aws-us-gov` for GovCloud, else `aws`."""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


_LIVE_STATES = ["pending", "running", "stopping", "stopped"]
"""States of instances that still exist for good (shutting-down ones are being terminated)."""
_STOPPED_STATES = ("stopping", "stopped")


def metadata_options(site: SiteId, config: Mapping[str, Any]) -> dict[str, Any]:
    """EC2's MetadataOptions for the site's `imds_v1` / `imds_hop_limit` (`config_imds`)."""
    v1, hops = config_imds(site, config)
    return {"HttpTokens": "optional" if v1 else "required", "HttpPutResponseHopLimit": hops,
            "HttpEndpoint": "enabled"}


class AwsAdapter(Ec2Gangs, Ec2Console, Ec2Terminate):
    """EC2 instances, one per attempt (N in a cluster placement group for a gang), tagged."""

    def __init__(
        self,
        site: SiteId,
        config: Mapping[str, Any],
        *,
        session: boto3.Session | None = None,
        endpoint_url: str | None = None,
    ) -> None:
        self.site = site
        self.region = config_str(site, config, "region")
        self.partition = partition_for_region(self.region)
        declared = config.get("partition")
        if declared is not None and declared != self.partition:
            raise ConfigError(
                site,
                "PartitionMismatch",
                f"region {self.region} is in partition {self.partition}, config says {declared}",
            )
        self.broker_id = config_str(site, config, "broker_id", DEFAULT_BROKER_ID)
        self.currency = config_str(site, config, "currency", "CNY" if self.partition == "aws-cn" else "USD")
        self.catalog: tuple[CatalogEntry, ...] = parse_catalog(site, config)
        self.live_prices = bool(config.get("live_prices", True))
        self.boot = bootstrap_options(config)
        self.metadata_options = metadata_options(site, config)
        self._config = dict(config)
        endpoint = endpoint_url or config_opt_str(site, config, "endpoint_url")
        # Built on first use, and again after a missing profile or refused keys (`_aws_session`).
        self._clients = Ec2Clients(site, self.region, endpoint, config, session=session)
        self._started: dict[str, float] = {}

    @property
    def _create(self) -> EC2Client:
        with map_ec2_errors(self.site):
            return self._clients.get()[0]

    @property
    def _read(self) -> EC2Client:
        with map_ec2_errors(self.site):
            return self._clients.get()[1]

    # --- Adapter protocol ---------------------------------------------------------------------

    def unsupported(self) -> Mapping[Capability, str]:
        reasons = {
            Capability.CAPACITY: "EC2 reports no free capacity or queue",
            Capability.STOCK: "EC2 has no stock API; capacity is learnt from InsufficientInstanceCapacity",
            Capability.QUEUES_JOBS: "an EC2 instance starts or fails; nothing waits in a queue",
        }
        if not self.live_prices:
            reasons[Capability.LIVE_PRICES] = "live_prices is off in this site's config"
        return reasons

    def offers(self, now: datetime) -> Sequence[Offer]:
        with self._errors():  # no profile or keys: out of service, visibly, until they are written
            self._clients.get()
        static = catalog_offers(
            self.site, self.catalog, region=self.region, currency=self.currency, read_at=None
        )
        spot_types = sorted({o.instance_type for o in static if o.spot})
        if not self.live_prices or not spot_types:
            return static
        latest = self._spot_prices(spot_types, now)
        offers = []
        for offer in static:
            if not offer.spot:
                offers.append(offer)
                continue
            zones = [offer.zone] if offer.zone else sorted(z for (t, z) in latest if t == offer.instance_type)
            if not zones:
                offers.append(offer)
            for zone in zones:
                price = latest.get((offer.instance_type, zone))
                if price is None:
                    offers.append(offer.model_copy(update={"zone": zone}))
                else:
                    offers.append(
                        offer.model_copy(update={"zone": zone, "price_per_hour": price, "price_read_at": now})
                    )
        return offers

    def capacity(self, now: datetime) -> CapacitySnapshot | None:
        return None

    def submit(self, request: LaunchRequest) -> str:
        # EC2 dedupes on ClientToken, but only a look-up finds what a retried call already made
        # under another client (and moto ignores ClientToken); a first call cannot have any.
        existing = None if request.first_call else self._launched(request)
        if existing is not None:
            return existing
        offer = request.offer
        marks = {**ownership_tags(self.broker_id, request), **gang_tags(request)}
        tags = [{"Key": k, "Value": v} for k, v in marks.items()]
        tags.append({"Key": "Name", "Value": f"szb-{request.attempt_id}"})
        user_data = render_user_data(request, **self.boot)
        size = len(user_data.encode())
        if size > EC2_USER_DATA_LIMIT:
            # Checked before calling: EC2 would refuse it as InvalidParameterValue.
            raise RequestError(
                self.site, "UserDataTooLarge", f"user data is {size} bytes; EC2 allows {EC2_USER_DATA_LIMIT}"
            )
        kwargs: dict[str, Any] = {
            "ImageId": config_str(self.site, self._config, "image_id"),
            "InstanceType": offer.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "ClientToken": client_token(request),
            "UserData": user_data,
            # Powered off, an on-demand instance stays (stopped) until the broker has read the
            # result from its console and deletes it; one-time spot instances cannot stop.
            "InstanceInitiatedShutdownBehavior": "terminate" if offer.spot else "stop",
            "MetadataOptions": self.metadata_options,
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tags},
                {"ResourceType": "volume", "Tags": tags},
            ],
        }
        placement = {"AvailabilityZone": offer.zone} if offer.zone else {}
        if request.group:
            placement["GroupName"] = request.group
        if placement:
            kwargs["Placement"] = placement
        if offer.spot:
            kwargs["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"},
            }
        for key, arg in (("subnet_id", "SubnetId"), ("key_name", "KeyName")):
            value = config_opt_str(self.site, self._config, key)
            if value:
                kwargs[arg] = value
        if self._config.get("security_group_ids"):
            kwargs["SecurityGroupIds"] = list(self._config["security_group_ids"])
        profile = config_opt_str(self.site, self._config, "iam_instance_profile")
        if profile:
            kwargs["IamInstanceProfile"] = {"Name": profile}
        with scope_ec2_quota(offer.instance_type, offer.spot), self._errors():
            resp = self._create.run_instances(**kwargs)
        instances = resp.get("Instances", [])
        if not instances:
            raise AdapterError(self.site, "NoInstanceReturned", "RunInstances returned no instance")
        self._just_started(backend_id := str(instances[0]["InstanceId"]))
        return backend_id

    def status(self, backend_id: str) -> AttemptStatus:
        with self._errors():
            resp = self._read.describe_instances(InstanceIds=[backend_id])
        found = [i for r in resp.get("Reservations", []) for i in r.get("Instances", [])]
        if not found:
            raise NotFoundError(self.site, "InvalidInstanceID.NotFound", f"{backend_id} does not exist")
        status = status_of(found[0])
        # Ended before its agent reported, ended by the broker (it tags the instance cancelled
        # when it removes it, after a normal end too), or a spot instance reclaimed after its job
        # ended: the job's own result on the console, if it printed one, says what it did (a
        # store restored from a backup forgot that end; a finished job is not preempted).
        if status.state in (AttemptState.LOST, AttemptState.CANCELLED, AttemptState.PREEMPTED):
            status = self._console_result(found[0]) or status
        return with_stop_time(found[0], status)  # billed to its stop, not to when we learnt it

    def cancel(self, backend_id: str, token: str) -> None:
        gang = parse_gang_id(backend_id)
        if gang is not None:
            return self.cancel_gang(gang, token)
        try:  # (NotFound too: EC2 may not list a new instance yet; TerminateInstances says)
            with self._errors():
                self._create.create_tags(
                    Resources=[backend_id], Tags=[{"Key": TAG_CANCELLED, "Value": token}]
                )
        except AdapterError as exc:
            # The mark only says who ended the instance. Roles often may tag only within
            # RunInstances (ec2:CreateAction): that must not keep the instance running.
            log.warning("%s: could not mark %s cancelled (%s); terminating it unmarked", self.site,
                        backend_id, exc)
        self._terminate(backend_id)  # (again while EC2 may not list an instance just started)

    def list_owned(self) -> Sequence[OwnedInstance]:
        owned = []
        for inst in self._describe(
            [
                {"Name": f"tag:{TAG_BROKER}", "Values": [self.broker_id]},
                {"Name": "instance-state-name", "Values": _LIVE_STATES},
            ]
        ):
            tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
            stopped = inst.get("State", {}).get("Name", "") in _STOPPED_STATES
            owned.append(
                owned_from_tags(self.site, inst["InstanceId"], tags, status_of(inst).state, stopped=stopped)
            )
        return [*owned, *self.listed_groups()]  # after the instances: a group empties first

    # --- helpers ------------------------------------------------------------------------------

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """`map_ec2_errors`; credentials the cloud refused are read again on the next call."""
        try:
            with map_ec2_errors(self.site):
                yield
        except AuthError as exc:
            self._clients.refused(exc.code)
            raise

    def _launched(self, request: LaunchRequest) -> str | None:
        """What an earlier call under this launch's token (and rank) already started."""
        if is_gang(request):
            return self.find_node(request.token, request.node_rank)
        return self.find_by_token(request.token)

    def find_by_token(self, token: str) -> str | None:
        """The instance already started for this token (any state), if any."""
        found = self._describe(
            [
                {"Name": f"tag:{TAG_BROKER}", "Values": [self.broker_id]},
                {"Name": f"tag:{TAG_TOKEN}", "Values": [token]},
            ]
        )
        return found[0]["InstanceId"] if found else None

    def _describe(self, filters: list[Any]) -> list[InstanceTypeDef]:
        out: list[InstanceTypeDef] = []
        with self._errors():
            for page in self._read.get_paginator("describe_instances").paginate(Filters=filters):
                for reservation in page.get("Reservations", []):
                    out.extend(reservation.get("Instances", []))
        return out

    def _spot_prices(self, instance_types: list[str], now: datetime) -> dict[tuple[str, str], float]:
        """Latest spot price per (type, zone) from the spot price history."""
        latest: dict[tuple[str, str], tuple[datetime, float]] = {}
        with self._errors():
            pages = self._read.get_paginator("describe_spot_price_history").paginate(
                InstanceTypes=instance_types,  # type: ignore[arg-type]
                ProductDescriptions=["Linux/UNIX"],
                StartTime=now,
            )
            for page in pages:
                for row in page.get("SpotPriceHistory", []):
                    key = (row.get("InstanceType", ""), row.get("AvailabilityZone", ""))
                    stamp = row["Timestamp"]
                    if key not in latest or stamp > latest[key][0]:
                        latest[key] = (stamp, float(row.get("SpotPrice", "0")))
        return {k: price for k, (_, price) in latest.items()}
