"""A local Alibaba Cloud ECS (2014-05-26, RPC style) endpoint for tests and demos.

`EcsEndpoint` is a loopback HTTP server that checks each request's signature (ACS3-HMAC-SHA256
as tea-openapi 0.4 sends by default, or the legacy HMAC-SHA1 RPC signature) and passes it to a
handler: a function from `EcsRequest` to `(status, body)`, as an httpx MockTransport handler.
`EcsCloud` is the stateful handler that answers RunInstances, DescribeInstances,
DeleteInstances, DescribeAvailableResource, DescribePrice, GetInstanceConsoleOutput and the
deployment-set calls (`tests.doubles.ecs_sets`) with the documented bodies; `EcsCloud.faults`
scripts errors per test. Swap the handler per test:
``endpoint.handler = cloud``.

    endpoint = EcsEndpoint.start(credentials={"ak-test": "sk-test"})
    endpoint.handler = EcsCloud(images={"m-ok"}, sold_out={("cn-beijing-i", "ecs.gn7-c12g1.3xlarge")})
    # SDK: Config(access_key_id="ak-test", access_key_secret="sk-test", region_id="cn-beijing",
    #             endpoint=endpoint.address, protocol="http")
    endpoint.stop()
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.doubles.ecs_sets import DeploymentSets

Body = dict[str, Any]
Reply = tuple[int, Body]


@dataclass(frozen=True)
class EcsRequest:
    """One verified call: the action, its flattened parameters and the caller's access key."""

    action: str
    params: Mapping[str, str]
    access_key_id: str


Handler = Callable[[EcsRequest], Reply]


def error(status: int, code: str, message: str) -> Reply:
    """The documented ECS error body."""
    return status, {
        "RequestId": str(uuid.uuid4()).upper(),
        "HostId": "ecs.aliyuncs.com",
        "Code": code,
        "Message": message,
        "Recommend": f"https://api.aliyun.com/troubleshoot?q={code}",
    }


# --- signature verification -------------------------------------------------------------------


def _acs3_signature(
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    signed: list[str],
    secret: str,
) -> str:
    canon_query = "&".join(f"{k}={urllib.parse.quote(query[k], safe='~')}" for k in sorted(query))
    canon_headers = "".join(f"{h}:{headers.get(h, '').strip()}\n" for h in signed)
    payload = headers.get("x-acs-content-sha256", "")
    canonical = f"{method}\n{path or '/'}\n{canon_query}\n{canon_headers}\n{';'.join(signed)}\n{payload}"
    to_sign = "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical.encode()).hexdigest()
    return hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()


def _rpc_v2_signature(method: str, query: Mapping[str, str], secret: str) -> str:
    def enc(s: str) -> str:
        return urllib.parse.quote(s, safe="~")

    canon = "&".join(f"{enc(k)}={enc(query[k])}" for k in sorted(query) if k != "Signature")
    to_sign = f"{method}&{enc('/')}&{enc(canon)}"
    digest = hmac.new((secret + "&").encode(), to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def verify(
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    credentials: Mapping[str, str],
) -> tuple[str, Reply | None]:
    """Check the request's signature; returns (access key id, error reply or None)."""
    auth = headers.get("authorization", "")
    if auth.startswith("ACS3-HMAC-SHA256 "):
        fields = dict(part.strip().split("=", 1) for part in auth[len("ACS3-HMAC-SHA256 ") :].split(","))
        ak = fields.get("Credential", "")
        if ak not in credentials:
            return ak, error(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        signed = fields.get("SignedHeaders", "").split(";")
        expected = _acs3_signature(method, path, query, headers, signed, credentials[ak])
        if not hmac.compare_digest(expected, fields.get("Signature", "")):
            return ak, error(
                400, "SignatureDoesNotMatch", "Specified signature is not matched with our calculation."
            )
        return ak, None
    if "Signature" in query:
        ak = query.get("AccessKeyId", "")
        if ak not in credentials:
            return ak, error(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        if not hmac.compare_digest(_rpc_v2_signature(method, query, credentials[ak]), query["Signature"]):
            return ak, error(
                400, "SignatureDoesNotMatch", "Specified signature is not matched with our calculation."
            )
        return ak, None
    return "", error(400, "MissingAccessKeyId", "AccessKeyId is mandatory for this action.")


# --- the server -------------------------------------------------------------------------------


class EcsEndpoint:
    """The loopback server; `handler` answers verified requests and may be swapped per test."""

    def __init__(self, server: ThreadingHTTPServer, credentials: Mapping[str, str]) -> None:
        self._server = server
        self.credentials = dict(credentials)
        self.handler: Handler = EcsCloud()
        self.requests: list[EcsRequest] = []

    @classmethod
    def start(cls, credentials: Mapping[str, str], host: str = "127.0.0.1", port: int = 0) -> EcsEndpoint:
        endpoint: EcsEndpoint

        class _Http(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                endpoint._serve(self)

            do_GET = do_POST

        server = ThreadingHTTPServer((host, port), _Http)
        server.daemon_threads = True
        endpoint = cls(server, credentials)
        threading.Thread(target=server.serve_forever, name="ecs-endpoint", daemon=True).start()
        return endpoint

    @property
    def address(self) -> str:
        """host:port, as the SDK's `endpoint` wants it (no scheme)."""
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _serve(self, http: BaseHTTPRequestHandler) -> None:
        split = urllib.parse.urlsplit(http.path)
        query = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))
        n = int(http.headers.get("Content-Length") or 0)
        raw = http.rfile.read(n) if n else b""
        headers = {k.lower(): v for k, v in http.headers.items()}
        ak, failure = verify(http.command, split.path, query, headers, self.credentials)
        params = dict(query)
        if raw and "x-www-form-urlencoded" in headers.get("content-type", ""):
            params.update(urllib.parse.parse_qsl(raw.decode(), keep_blank_values=True))
        action = headers.get("x-acs-action") or params.get("Action", "")
        if failure is None:
            request = EcsRequest(action=action, params=params, access_key_id=ak)
            self.requests.append(request)
            status, body = self.handler(request)
        else:
            status, body = failure
        data = json.dumps(body).encode()
        http.send_response(status)
        http.send_header("Content-Type", "application/json;charset=utf-8")
        http.send_header("Content-Length", str(len(data)))
        http.end_headers()
        http.wfile.write(data)


# --- the stateful fake ECS --------------------------------------------------------------------


@dataclass
class EcsFault:
    """Answer matching calls with an error; `times` None means every time."""

    action: str
    code: str
    status: int = 400
    message: str = "scripted fault"
    instance_type: str | None = None
    times: int | None = None
    after: int = 0
    """Let this many matching calls through first (the 2nd launch of a gang fails: after=1)."""

    def matches(self, req: EcsRequest) -> bool:
        if self.action != req.action or self.times == 0:
            return False
        if self.instance_type is not None and req.params.get("InstanceType") != self.instance_type:
            return False
        if self.after > 0:
            self.after -= 1
            return False
        return True


def _indexed(params: Mapping[str, str], prefix: str) -> list[str]:
    """Values of `Prefix.1`, `Prefix.2`, … in index order."""
    items = []
    for key, value in params.items():
        if key.startswith(prefix + ".") and key[len(prefix) + 1 :].isdigit():
            items.append((int(key[len(prefix) + 1 :]), value))
    return [v for _, v in sorted(items)]


def _tags(params: Mapping[str, str]) -> dict[str, str]:
    tags = {}
    i = 1
    while f"Tag.{i}.Key" in params:
        tags[params[f"Tag.{i}.Key"]] = params.get(f"Tag.{i}.Value", "")
        i += 1
    return tags


@dataclass
class EcsCloud(DeploymentSets):
    """Documented ECS behaviour for one region, with scripted stock, prices and faults."""

    images: set[str] = field(default_factory=lambda: {"m-szb-base"})
    zones: tuple[str, ...] = ("cn-beijing-i", "cn-beijing-h")
    instance_types: tuple[str, ...] = ("ecs.gn7i-c8g1.2xlarge", "ecs.gn7-c12g1.3xlarge")
    sold_out: set[tuple[str, str]] = field(default_factory=set)
    """(zone, instance type) pairs with no stock: RunInstances → OperationDenied.NoStock."""
    spot_sold_out: set[tuple[str, str]] | None = None
    """The spot market's sold-out pairs when they differ from `sold_out` (None: the same): ECS
    keeps spot stock apart (DescribeAvailableResource with a SpotStrategy reports it)."""
    low_stock: set[tuple[str, str]] = field(default_factory=set)
    """(zone, instance type) pairs in stock but short of it: DescribeAvailableResource says
    Available / ClosedWithStock ("resources in insufficient stock"); RunInstances succeeds."""
    prices: dict[str, float] = field(
        default_factory=lambda: {"ecs.gn7i-c8g1.2xlarge": 9.5, "ecs.gn7-c12g1.3xlarge": 31.0}
    )
    spot_discount: float = 0.3
    faults: list[EcsFault] = field(default_factory=list)
    instances: dict[str, Body] = field(default_factory=dict)
    user_data: dict[str, str] = field(default_factory=dict)
    console: dict[str, str] = field(default_factory=dict)
    """Instance id -> what it printed to its serial console."""
    tokens: dict[str, list[str]] = field(default_factory=dict)
    deployment_sets: dict[str, Body] = field(default_factory=dict)
    set_tokens: dict[str, str] = field(default_factory=dict)

    def __call__(self, req: EcsRequest) -> Reply:
        for fault in self.faults:
            if fault.matches(req):
                if fault.times is not None:
                    fault.times -= 1
                return error(fault.status, fault.code, fault.message)
        handler = {
            "RunInstances": self.run_instances,
            "DescribeInstances": self.describe_instances,
            "DeleteInstances": self.delete_instances,
            "DescribeAvailableResource": self.describe_available_resource,
            "DescribePrice": self.describe_price,
            "GetInstanceConsoleOutput": self.get_instance_console_output,
            "CreateDeploymentSet": self.create_deployment_set,
            "DeleteDeploymentSet": self.delete_deployment_set,
            "DescribeDeploymentSets": self.describe_deployment_sets,
        }.get(req.action)
        if handler is None:
            return error(
                400, "InvalidAction.NotFound", "Specified api is not found, please check your url and method."
            )
        return handler(req.params)

    # scripted events
    def reclaim_spot(self, instance_id: str) -> None:
        """What a spot (preemptible) release looks like: stopped, locked for Recycling."""
        inst = self.instances[instance_id]
        inst["Status"] = "Stopped"
        inst["OperationLocks"] = {"LockReason": [{"LockReason": "Recycling"}]}

    def interrupt_spot(self, instance_id: str) -> None:
        """A spot interruption as ECS documents it: the instance, still Running, is locked for
        Recycling (DescribeInstances `OperationLocks`) and released about 5 minutes later."""
        self.instances[instance_id]["OperationLocks"] = {"LockReason": [{"LockReason": "Recycling"}]}

    def release(self, instance_id: str) -> None:
        """Released by ECS (a reclaimed spot instance after its notice): DescribeInstances no
        longer returns it, and calls naming it answer InvalidInstanceId.NotFound."""
        del self.instances[instance_id]

    def stop(self, instance_id: str) -> None:
        self.instances[instance_id]["Status"] = "Stopped"

    # actions
    def run_instances(self, p: Mapping[str, str]) -> Reply:
        token = p.get("ClientToken")
        if token and token in self.tokens:
            return 200, {
                "RequestId": str(uuid.uuid4()),
                "InstanceIdSets": {"InstanceIdSet": self.tokens[token]},
            }
        image = p.get("ImageId", "")
        if image not in self.images:
            return error(404, "InvalidImageId.NotFound", "The specified ImageId does not exist.")
        itype = p.get("InstanceType", "")
        if itype not in self.instance_types:
            return error(
                400,
                "InvalidInstanceType.ValueNotSupported",
                "The specified InstanceType does not exist or beyond the permitted range.",
            )
        zone = p.get("ZoneId") or self.zones[0]
        if zone not in self.zones:
            return error(403, "Zone.NotOnSale", "The specified zone is not available for purchase.")
        if (zone, itype) in self._sold_out(p):
            return error(
                403,
                "OperationDenied.NoStock",
                "The requested resource is sold out in the specified zone; try other types of "
                "resources or other regions and zones.",
            )
        bad_set = self.check_deployment_set(p)
        if bad_set is not None:
            return bad_set
        ids = ["i-" + uuid.uuid4().hex[:20] for _ in range(int(p.get("Amount", "1")))]
        for iid in ids:
            self.instances[iid] = {
                "InstanceId": iid,
                "InstanceName": p.get("InstanceName", iid),
                "InstanceType": itype,
                "ImageId": image,
                "Status": "Pending",
                "RegionId": p.get("RegionId", ""),
                "ZoneId": zone,
                "SpotStrategy": p.get("SpotStrategy", "NoSpot"),
                "InstanceChargeType": p.get("InstanceChargeType", "PostPaid"),
                "CreationTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%MZ"),
                "Tags": {"Tag": [{"TagKey": k, "TagValue": v} for k, v in _tags(p).items()]},
                "OperationLocks": {"LockReason": []},
                "DeploymentSetId": p.get("DeploymentSetId", ""),
                "VpcAttributes": {"PrivateIpAddress": {"IpAddress": [f"192.168.{len(self.instances) // 250}."
                                                                     f"{len(self.instances) % 250 + 2}"]}},
            }
            self.user_data[iid] = p.get("UserData", "")
        if token:
            self.tokens[token] = ids
        return 200, {"RequestId": str(uuid.uuid4()), "InstanceIdSets": {"InstanceIdSet": ids}}

    def describe_instances(self, p: Mapping[str, str]) -> Reply:
        wanted = json.loads(p["InstanceIds"]) if p.get("InstanceIds") else None
        tags = _tags(p)
        found = []
        for inst in self.instances.values():
            if wanted is not None and inst["InstanceId"] not in wanted:
                continue
            have = {t["TagKey"]: t["TagValue"] for t in inst["Tags"]["Tag"]}
            if any(have.get(k) != v for k, v in tags.items()):
                continue
            if p.get("Status") and inst["Status"] != p["Status"]:
                continue
            found.append(inst)
        for inst in found:  # instances boot between two polls
            if inst["Status"] == "Pending":
                inst["Status"] = "Starting"
            elif inst["Status"] == "Starting":
                inst["Status"] = "Running"
        number, size = int(p.get("PageNumber", "1")), int(p.get("PageSize", "10"))
        page = found[(number - 1) * size : number * size]
        return 200, {
            "RequestId": str(uuid.uuid4()),
            "TotalCount": len(found),
            "PageNumber": number,
            "PageSize": size,
            "Instances": {"Instance": [json.loads(json.dumps(i)) for i in page]},
        }

    def delete_instances(self, p: Mapping[str, str]) -> Reply:
        ids = _indexed(p, "InstanceId")
        missing = [i for i in ids if i not in self.instances]
        if missing:
            return error(404, "InvalidInstanceId.NotFound", "The specified InstanceId does not exist.")
        if p.get("Force") not in ("True", "true") and any(
            self.instances[i]["Status"] not in ("Stopped",) for i in ids
        ):
            return error(
                403,
                "IncorrectInstanceStatus",
                "The current status of the resource does not support this operation.",
            )
        for iid in ids:
            del self.instances[iid]
        return 200, {"RequestId": str(uuid.uuid4())}

    def get_instance_console_output(self, p: Mapping[str, str]) -> Reply:
        iid = p.get("InstanceId", "")
        if iid not in self.instances:
            return error(404, "InvalidInstanceId.NotFound", "The specified InstanceId does not exist.")
        return 200, {
            "RequestId": str(uuid.uuid4()),
            "InstanceId": iid,
            "LastUpdateTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ConsoleOutput": base64.b64encode(self.console.get(iid, "").encode()).decode(),
        }

    def _sold_out(self, p: Mapping[str, str]) -> set[tuple[str, str]]:
        """The sold-out pairs of the market a request names (its SpotStrategy)."""
        spot = p.get("SpotStrategy") in ("SpotAsPriceGo", "SpotWithPriceLimit")
        return self.spot_sold_out if spot and self.spot_sold_out is not None else self.sold_out

    def describe_available_resource(self, p: Mapping[str, str]) -> Reply:
        zones = []
        for zone in self.zones:
            if p.get("ZoneId") and p["ZoneId"] != zone:
                continue
            supported = []
            for itype in self.instance_types:
                if p.get("InstanceType") and p["InstanceType"] != itype:
                    continue
                stock = (zone, itype) not in self._sold_out(p)
                low = "ClosedWithStock" if (zone, itype) in self.low_stock else "WithStock"
                supported.append(
                    {
                        "Value": itype,
                        "Status": "Available" if stock else "SoldOut",
                        "StatusCategory": low if stock else "WithoutStock",
                    }
                )
            zones.append(
                {
                    "RegionId": p.get("RegionId", ""),
                    "ZoneId": zone,
                    "Status": "Available",
                    "StatusCategory": "WithStock",
                    "AvailableResources": {
                        "AvailableResource": [
                            {"Type": "InstanceType", "SupportedResources": {"SupportedResource": supported}}
                        ]
                    },
                }
            )
        return 200, {"RequestId": str(uuid.uuid4()), "AvailableZones": {"AvailableZone": zones}}

    def describe_price(self, p: Mapping[str, str]) -> Reply:
        itype = p.get("InstanceType", "")
        if itype not in self.prices:
            return error(
                400,
                "InvalidInstanceType.ValueNotSupported",
                "The specified InstanceType does not exist or beyond the permitted range.",
            )
        price = self.prices[itype]
        if p.get("SpotStrategy") in ("SpotAsPriceGo", "SpotWithPriceLimit"):
            price = round(price * self.spot_discount, 4)
        return 200, {
            "RequestId": str(uuid.uuid4()),
            "PriceInfo": {
                "Price": {
                    "OriginalPrice": price,
                    "DiscountPrice": 0.0,
                    "TradePrice": price,
                    "Currency": "CNY",
                },
                "Rules": {"Rule": []},
            },
        }
