"""Generic Apache libcloud compute adapter: any driver named in config.

Config keys: ``driver`` ("dummy" or a libcloud `Provider` name such as "ec2", "openstack",
"gce", "aliyun_ecs"), ``driver_args`` (list) and ``driver_kwargs`` (mapping) for the driver's
constructor, ``image`` (image id; for "gce" its URL or ``projects/P/global/images/NAME``),
``location`` (location id), ``region``, ``currency``, ``broker_id``, ``instance_types`` (see
`adapters._catalog`; `instance_type` is the libcloud size id), ``userdata_kwarg`` (e.g.
"ex_userdata") and ``metadata_kwarg`` (e.g. "ex_metadata") when the driver takes them,
``create_kwargs`` (passed through), ``spot_kwargs`` (what asks the driver for spot capacity:
``{ex_spot: true}`` for "ec2", ``{ex_preemptible: true}`` for "gce"; without it the site offers
no spot), ``heartbeat_s``, ``report_give_up_s`` and ``report_backoff_max_s`` (see
`adapters.bootstrap`).

Marks: the node name is ``szb-<broker_id>-<token>``; drivers that take metadata also get the
broker's tags. Idempotency: submit looks for a node with that name before creating one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import requests
import urllib3.exceptions
from libcloud.common.exceptions import BaseHTTPError, RateLimitReachedError
from libcloud.common.types import (
    InvalidCredsError,
    LibcloudError,
    MalformedResponseError,
    ProviderError,
    ServiceUnavailableError,
)
from libcloud.compute.base import Node, NodeDriver, NodeImage
from libcloud.compute.providers import get_driver
from libcloud.compute.types import KeyPairDoesNotExistError, NodeState, Provider

from adapters._catalog import CatalogEntry, catalog_offers, config_opt_str, config_str, parse_catalog
from adapters._codes import EC2_LISTING_LAG_S, LIBCLOUD_TABLES, classify, classify_message
from adapters._libcloud_imds import harden_metadata, metadata_params
from adapters._tags import (
    DEFAULT_BROKER_ID,
    TAG_ATTEMPT,
    TAG_BROKER,
    TAG_JOB,
    TAG_TOKEN,
    owner_prefix,
    ownership_tags,
)
from adapters.base import (
    AdapterError,
    AuthError,
    Capability,
    ConfigError,
    NotFoundError,
    TransientError,
    UnsupportedError,
)
from adapters.bootstrap import bootstrap_options, render_user_data, result_from_console
from broker.model import (
    AttemptId,
    AttemptState,
    AttemptStatus,
    CapacitySnapshot,
    JobId,
    LaunchRequest,
    Offer,
    OwnedInstance,
    SiteId,
)

__all__ = ["EXCEPTION_TYPES", "HTTP_STATUS", "LibcloudAdapter", "map_libcloud_errors"]

EXCEPTION_TYPES: tuple[tuple[type[Exception], type[AdapterError]], ...] = (
    (RateLimitReachedError, TransientError),
    (InvalidCredsError, AuthError),
    (ServiceUnavailableError, TransientError),
    (MalformedResponseError, TransientError),
    (KeyPairDoesNotExistError, ConfigError),
)
"""libcloud exception types, most specific first (checked before codes and statuses)."""

HTTP_STATUS: dict[int, type[AdapterError]] = {
    401: AuthError,
    403: AuthError,
    404: NotFoundError,
    408: TransientError,
    413: TransientError,  # OpenStack's overLimit (with Retry-After)
    429: TransientError,
    500: TransientError,
    502: TransientError,
    503: TransientError,
    504: TransientError,
}
"""HTTP statuses of BaseHTTPError/ProviderError when the body names no known provider code."""

_CODE_IN_MESSAGE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9]*(?:\.[A-Za-z0-9]+)*)\s*:")
_CODE_IN_DICT = re.compile(r"""['"]code['"]\s*:\s*['"]([^'"]+)['"]""")


def provider_code(exc: BaseException) -> str | None:
    """The provider's own error code: the one a driver kept on the error (GCE's), else one
    inside its message."""
    kept = getattr(exc, "code", None)
    if isinstance(kept, str) and kept:
        return kept
    text = str(getattr(exc, "message", None) or getattr(exc, "value", None) or exc)
    for pattern in (_CODE_IN_DICT, _CODE_IN_MESSAGE):
        match = pattern.search(text)
        if match:
            return match.group(1)
    return None


def classify_exception(exc: BaseException) -> tuple[type[AdapterError], str]:
    """The adapter error class and code for a libcloud exception."""
    for exc_type, cls in EXCEPTION_TYPES:
        if isinstance(exc, exc_type):
            return cls, type(exc).__name__
    code = provider_code(exc)
    # The message too: EC2's oversized UserData is a generic InvalidParameterValue whose text
    # alone says it is the job's own request, not the site's configuration.
    message = str(getattr(exc, "message", None) or getattr(exc, "value", None) or exc)
    for exact, prefixes in LIBCLOUD_TABLES if code is not None else ():
        cls = classify(code or "", exact, prefixes, message)
        if cls is not AdapterError:
            return cls, code or ""
    status = getattr(exc, "code", None) if isinstance(exc, BaseHTTPError) else None
    if isinstance(exc, ProviderError):
        status = exc.http_code
    worded = classify_message(message)
    if worded is not None:  # (a quota's 403 is not refused credentials)
        return worded, code or (f"HTTP{status}" if isinstance(status, int) else type(exc).__name__)
    if isinstance(status, int) and status in HTTP_STATUS:
        return HTTP_STATUS[status], code or f"HTTP{status}"
    return AdapterError, code or type(exc).__name__


@contextmanager
def map_libcloud_errors(site: str) -> Iterator[None]:
    """Turn libcloud exceptions into the adapter error tree, keeping the provider code."""
    try:
        yield
    except AdapterError:
        raise
    except (BaseHTTPError, LibcloudError) as exc:
        cls, code = classify_exception(exc)
        raise cls(
            site, code, str(getattr(exc, "message", None) or getattr(exc, "value", None) or exc)
        ) from exc
    except NETWORK_ERRORS as exc:
        raise TransientError(site, type(exc).__name__, str(exc)) from exc


NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.HTTPError,
    ConnectionError,
    TimeoutError,
)
"""What libcloud's HTTP layer (requests on urllib3) raises when the endpoint is down or slow.

`requests.exceptions.ConnectionError` is an `OSError`, not the built-in `ConnectionError`."""


_STATES = {
    NodeState.RUNNING: AttemptState.RUNNING,
    NodeState.PENDING: AttemptState.PENDING,
    NodeState.STARTING: AttemptState.PENDING,
    NodeState.REBOOTING: AttemptState.PENDING,
}
_SAFE = re.compile(r"[^a-z0-9-]")


def _safe(text: str) -> str:
    return _SAFE.sub("-", text.lower())


class LibcloudAdapter:
    """Nodes of any libcloud compute driver, named with the broker's marks."""

    def __init__(self, site: SiteId, config: Mapping[str, Any], *, driver: NodeDriver | None = None) -> None:
        self.site = site
        self.region = str(config.get("region", ""))
        self.currency = config_str(site, config, "currency", "USD")
        self.broker_id = config_str(site, config, "broker_id", DEFAULT_BROKER_ID)
        self.catalog: tuple[CatalogEntry, ...] = parse_catalog(site, config)
        self.boot = bootstrap_options(config)
        self._config = dict(config)
        self.ec2 = str(config.get("driver", "")).lower() == "ec2"
        if self.ec2:
            metadata_params(site, config, "")  # (a bad imds_v1 / imds_hop_limit is said at start)
        self.unlisted_grace_s = EC2_LISTING_LAG_S if self.ec2 else 0.0  # (`broker.dispatch.hung`)
        # The id cut short leaves room for a whole token in a 63-character hostname (a cut
        # token could not be read back); its hash still tells this broker's nodes apart.
        self._prefix = _safe(owner_prefix(self.broker_id, shown=12))
        self.driver: NodeDriver = driver if driver is not None else self._make_driver()

    def _make_driver(self) -> NodeDriver:
        name = config_str(self.site, self._config, "driver").lower()
        provider = Provider.DUMMY if name == "dummy" else getattr(Provider, name.upper(), None)
        if provider is None:
            raise ConfigError(self.site, "UnknownDriver", f"libcloud has no compute driver {name!r}")
        args = list(self._config.get("driver_args", ["szb"] if name == "dummy" else []))
        kwargs = dict(self._config.get("driver_kwargs", {}))
        with map_libcloud_errors(self.site):
            cls = get_driver(provider)
            driver: NodeDriver = cls(*args, **kwargs)
            return driver

    # --- Adapter protocol ---------------------------------------------------------------------

    def unsupported(self) -> Mapping[Capability, str]:
        reasons = {
            Capability.LIVE_PRICES: "prices come from the site's static catalog",
            Capability.STOCK: "libcloud has no stock API",
            Capability.CAPACITY: "libcloud reports no free capacity or queue",
            Capability.QUEUES_JOBS: "a libcloud node starts or fails; nothing waits in a queue",
        }
        if not self._config.get("userdata_kwarg"):
            reasons[Capability.CONTAINER_IMAGES] = "no userdata_kwarg configured, so no bootstrap script runs"
        if not self._spot_kwargs():
            reasons[Capability.SPOT] = _NO_SPOT
        return reasons

    def offers(self, now: datetime) -> Sequence[Offer]:
        entries = list(self.catalog)
        if not self._spot_kwargs():
            entries = [e.model_copy(update={"spot_price_per_hour": None}) for e in entries]
        return catalog_offers(self.site, entries, region=self.region, currency=self.currency, read_at=None)

    def capacity(self, now: datetime) -> CapacitySnapshot | None:
        return None

    def submit(self, request: LaunchRequest) -> str:
        name = self.node_name(request.token)
        existing = None if request.first_call else self._find(name)
        if existing is not None:
            return str(existing.id)
        with map_libcloud_errors(self.site):
            size = self._pick(self.driver.list_sizes(), request.offer.instance_type, "size")
            image_id = config_str(self.site, self._config, "image")
            # Listing images is slow. GCE's driver reads an image's selfLink (its URL or
            # `projects/P/global/images/NAME` path), which is what a GCE site's `image` names.
            image = NodeImage(id=image_id, name=image_id, driver=self.driver, extra={"selfLink": image_id})
            kwargs: dict[str, Any] = dict(self._config.get("create_kwargs", {}))
            location = config_opt_str(self.site, self._config, "location")
            if location:
                kwargs["location"] = self._pick(self.driver.list_locations(), location, "location")
            userdata_kwarg = config_opt_str(self.site, self._config, "userdata_kwarg")
            if userdata_kwarg:
                kwargs[userdata_kwarg] = render_user_data(request, **self.boot)
            metadata_kwarg = config_opt_str(self.site, self._config, "metadata_kwarg")
            if metadata_kwarg:
                kwargs[metadata_kwarg] = ownership_tags(self.broker_id, request)
            kwargs.update(self._market(request.offer))
            node = self.driver.create_node(name=name, size=size, image=image, **kwargs)
        if self.ec2:
            harden_metadata(self.driver, self.site, self._config, str(node.id))
        return str(node.id)

    def status(self, backend_id: str) -> AttemptStatus:
        node = self._node(backend_id)
        if node is None:
            raise NotFoundError(self.site, "NodeNotFound", f"{backend_id} does not exist")
        state = _STATES.get(node.state)
        if state is not None:
            return AttemptStatus(state=state, message=f"libcloud state {node.state}")
        found = self._console_result(node)
        if found is not None:
            return found
        if _is_spot(node):  # ended before the job reported, and not by the broker: reclaimed
            return AttemptStatus(
                state=AttemptState.PREEMPTED, message=f"spot node {node.state} before the job reported"
            )
        lost = f"libcloud state {node.state} before the job reported"
        return AttemptStatus(state=AttemptState.LOST, message=lost)

    def kept_result(self, backend_id: str) -> AttemptStatus | None:
        """The result the node's bootstrap printed to its console (`adapters.base.KeptResult`)."""
        node = self._node(backend_id)
        return None if node is None else self._console_result(node)

    def _console_result(self, node: Node) -> AttemptStatus | None:
        """The result the bootstrap printed to the console, for drivers that can read it."""
        read = getattr(self.driver, "ex_get_console_output", None)
        attempt = _node_tags(node).get(TAG_ATTEMPT)
        if read is None or not attempt:
            return None
        try:
            with map_libcloud_errors(self.site):
                reply = read(node)
        except UnicodeDecodeError as exc:  # (EC2's driver decodes strictly; a console holds any byte)
            reply = bytes(exc.object).decode("utf-8", errors="replace")
        except TransientError:
            raise  # no evidence yet: the poll asks again
        except AdapterError:
            return None
        text = reply.get("output") if isinstance(reply, dict) else reply
        return result_from_console(str(text or ""), attempt)

    def cancel(self, backend_id: str, token: str) -> None:
        node = self._node(backend_id)
        if node is None:
            return
        try:
            with map_libcloud_errors(self.site):
                self.driver.destroy_node(node)
        except NotFoundError:
            return

    def list_owned(self) -> Sequence[OwnedInstance]:
        owned = []
        with map_libcloud_errors(self.site):
            nodes = list(self.driver.list_nodes())
        for node in nodes:
            if not str(node.name or "").startswith(self._prefix) or node.state == NodeState.TERMINATED:
                continue
            tags = _node_tags(node)
            if tags.get(TAG_BROKER, self.broker_id) != self.broker_id:
                continue  # another broker's, whatever its name says
            token = tags.get(TAG_TOKEN) or str(node.name)[len(self._prefix) :]
            job, attempt = tags.get(TAG_JOB), tags.get(TAG_ATTEMPT)
            owned.append(
                OwnedInstance(
                    site=self.site,
                    backend_id=str(node.id),
                    token=token,
                    job_id=JobId(job) if job else None,
                    attempt_id=AttemptId(attempt) if attempt else None,
                    state=_STATES.get(node.state, AttemptState.LOST),
                    stopped=node.state not in _STATES,  # exists (not terminated) but does not run
                )
            )
        return owned

    # --- helpers ------------------------------------------------------------------------------

    def _spot_kwargs(self) -> dict[str, Any]:
        return dict(self._config.get("spot_kwargs") or {})

    def _market(self, offer: Offer) -> dict[str, Any]:
        """The create_node arguments of the offer's market (spot: `spot_kwargs`)."""
        if not offer.spot:
            return {}
        spot = self._spot_kwargs()
        if not spot:  # never start on demand what was chosen (and priced) as spot
            raise UnsupportedError(self.site, "SpotUnsupported", _NO_SPOT)
        return spot

    def node_name(self, token: str) -> str:
        """The node name that marks an attempt (broker id + token, hostname-safe, ≤ 63 chars)."""
        name = self._prefix + _safe(token)
        if len(name) > 63:  # never cut: the token is read back from the name where tags are not
            raise UnsupportedError(self.site, "NameTooLong", f"node name {name!r} is over 63 characters")
        return name

    def _find(self, name: str) -> Node | None:
        with map_libcloud_errors(self.site):
            for node in self.driver.list_nodes():
                if node.name == name and node.state != NodeState.TERMINATED:
                    return node
        return None

    def _node(self, backend_id: str) -> Node | None:
        with map_libcloud_errors(self.site):
            for node in self.driver.list_nodes():
                if str(node.id) == backend_id:
                    return node
        return None

    def _pick(self, items: Sequence[Any], wanted: str, what: str) -> Any:
        for item in items:
            if str(item.id) == wanted or getattr(item, "name", None) == wanted:
                return item
        raise ConfigError(self.site, f"Unknown{what.capitalize()}", f"driver has no {what} {wanted!r}")


_NO_SPOT = "libcloud's generic create_node has no spot market option and no spot_kwargs are configured"


def _is_spot(node: Node) -> bool:
    """A spot (EC2 `instanceLifecycle`) or preemptible (GCE `scheduling`) node."""
    extra = node.extra or {}
    scheduling = extra.get("scheduling")
    preemptible = isinstance(scheduling, dict) and bool(scheduling.get("preemptible"))
    return extra.get("instance_lifecycle") == "spot" or preemptible


def _node_tags(node: Node) -> dict[str, str]:
    extra = node.extra or {}
    for key in ("tags", "metadata"):
        value = extra.get(key)
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
    return {}
