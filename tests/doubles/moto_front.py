"""moto (server mode) on loopback behind a thin fault-injecting WSGI front.

`MotoFront.start()` serves moto's EC2 (and every other moto backend) on 127.0.0.1:<free port>,
plus EC2 placement groups, which moto lacks (`tests.doubles.ec2_groups`).
Faults are chosen per test through `front.scenario` (a `Scenario` of `AwsFault`s) and answer
with the wire shape real EC2 sends (XML ``<Response><Errors><Error>``; capacity errors as HTTP
500, throttling as 503, auth failures as 401). `front.reset()` wipes moto's state and the
scenario. The front also lets libcloud's EC2 driver talk to moto (query-signed requests get
an EC2 Authorization hint; the 2016-11-15 namespace gets libcloud's trailing slash).

    front = MotoFront.start()
    front.scenario = Scenario([AwsFault("RunInstances", "InsufficientInstanceCapacity",
                                        instance_type="p4d.24xlarge")])
    boto3.client("ec2", endpoint_url=front.url, region_name="us-east-1", ...)
    front.stop()
"""

from __future__ import annotations

import base64
import io
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from tests.doubles.ec2_groups import PlacementGroups

StartResponse = Callable[..., Any]

_STATUS = {
    400: "400 Bad Request",
    401: "401 Unauthorized",
    403: "403 Forbidden",
    500: "500 Internal Server Error",
    502: "502 Bad Gateway",
    503: "503 Service Unavailable",
}


@dataclass
class AwsFault:
    """Answer matching EC2 calls with an error; `times` None means every time."""

    action: str
    code: str
    status: int = 500
    message: str = ""
    region: str | None = None
    instance_type: str | None = None
    times: int | None = None
    zone: str | None = None
    after: int = 0
    """Let this many matching calls through first (the 2nd launch of a gang fails: after=1)."""
    client_token: str | None = None
    """Only calls carrying this ClientToken (one attempt's launch)."""
    by_id: bool = False
    """Only calls naming instance ids (a poll of one instance, not a list by tags)."""
    html: str = ""
    """Answer with an HTML error page instead of EC2's XML (a load balancer or proxy in front
    of the endpoint failing): "html5" (no closing tags: botocore cannot parse it) or "bare"
    (`<html>...</html>`, which botocore reads as a generic HTTP error)."""

    def matches(self, action: str, region: str, params: dict[str, str]) -> bool:
        if self.times == 0 or action != self.action:
            return False
        if self.client_token is not None and params.get("ClientToken") != self.client_token:
            return False
        if self.by_id and "InstanceId.1" not in params:
            return False
        if self.region is not None and region != self.region:
            return False
        if self.zone is not None and params.get("Placement.AvailabilityZone") != self.zone:
            return False
        if self.instance_type is not None and params.get("InstanceType") != self.instance_type:
            return False
        if self.after > 0:
            self.after -= 1
            return False
        return True


def capacity_fault(
    instance_type: str, *, region: str | None = None, zone: str | None = None, times: int | None = None,
    after: int = 0,
) -> AwsFault:
    return AwsFault(
        "RunInstances",
        "InsufficientInstanceCapacity",
        500,
        f"We currently do not have sufficient {instance_type} capacity in the Availability Zone "
        "you requested. Our system will be working on provisioning additional capacity.",
        region=region,
        instance_type=instance_type,
        times=times,
        zone=zone,
        after=after,
    )


def throttle_fault(action: str = "RunInstances", *, times: int | None = None) -> AwsFault:
    return AwsFault(action, "RequestLimitExceeded", 503, "Request limit exceeded.", times=times)


@dataclass
class Scenario:
    """The faults for one test, plus every EC2 call seen (action, region, params)."""

    faults: list[AwsFault] = field(default_factory=list)
    rejected_access_keys: set[str] = field(default_factory=set)
    """Requests signed with these keys fail with AuthFailure (401)."""
    calls: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    user_data_limit: int = 16 * 1024
    """EC2 refuses RunInstances whose UserData is longer than this in raw form (16 KB, EC2
    User Guide "Work with instance user data"); a test may lower it to reach the refusal
    with a spec the broker's own check lets through."""
    console_buffered: bool = False
    """GetConsoleOutput without `Latest=true` answers with what was posted at the instance's
    last state change, as EC2 does (modelled as nothing: the job's lines came after its boot)."""
    delay_after: dict[str, float] = field(default_factory=dict)
    """Action -> seconds: the call reaches moto, then the answer is held back this long
    (a broker killed meanwhile has made the cloud call without learning its result)."""
    hold_before: dict[str, threading.Event] = field(default_factory=dict)
    """Action -> gate: the call waits until the test opens the gate before faults or moto see
    it (an attempt times out meanwhile; faults set while it waits apply to it)."""
    hold_after: dict[str, threading.Event] = field(default_factory=dict)
    """Action -> gate: the call reaches moto, then its answer waits until the test opens the
    gate (a cancel lands while the caller waits; calls after the gate opened pass at once)."""

    def count(self, action: str) -> int:
        return sum(1 for a, _, _ in self.calls if a == action)


def _error_xml(code: str, message: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
        f"<Code>{code}</Code><Message>{message}</Message></Error></Errors>"
        f"<RequestID>{uuid.uuid4()}</RequestID></Response>"
    ).encode()


def _user_data_size(params: dict[str, str]) -> int:
    """Bytes of UserData in raw form (it travels base64-encoded)."""
    encoded = params.get("UserData", "")
    try:
        return len(base64.b64decode(encoded))
    except ValueError:
        return len(encoded)


class _FaultFront:
    def __init__(self, app: Any, front: MotoFront) -> None:
        self.app = app
        self.front = front

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        n = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(n) if n else b""
        environ["wsgi.input"] = io.BytesIO(body)
        params = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode(errors="replace")).items()}
        params.update({k: v[0] for k, v in urllib.parse.parse_qs(environ.get("QUERY_STRING", "")).items()})
        auth = environ.get("HTTP_AUTHORIZATION", "")
        libcloud = (
            not auth and "Action" in params and ("AWSAccessKeyId" in params or "X-Amz-Credential" in params)
        )
        if libcloud:  # query-signed (libcloud's EC2 driver): tell moto it is EC2
            cred = params.get("X-Amz-Credential") or (
                f"{params['AWSAccessKeyId']}/20200101/{self.front.libcloud_region}/ec2/aws4_request"
            )
            environ["HTTP_AUTHORIZATION"] = (
                f"AWS4-HMAC-SHA256 Credential={cred}, SignedHeaders=host, Signature=0"
            )
            auth = environ["HTTP_AUTHORIZATION"]
        credential = auth.split("Credential=")[1].split(",")[0] if "Credential=" in auth else ""
        parts = credential.split("/")
        access_key = parts[0] if parts else ""
        region = parts[2] if len(parts) > 2 else "us-east-1"
        action = params.get("Action", "")
        scenario = self.front.scenario
        if action:
            scenario.calls.append((action, region, params))
            gate = scenario.hold_before.get(action)
            if gate is not None:
                gate.wait(timeout=60)  # a test that failed before opening it must not hang the server
            if access_key in scenario.rejected_access_keys:
                return self._reply(
                    start_response,
                    401,
                    "AuthFailure",
                    "AWS was not able to validate the provided access credentials",
                )
            if action == "RunInstances" and _user_data_size(params) > scenario.user_data_limit:
                return self._reply(
                    start_response,
                    400,
                    "InvalidParameterValue",
                    f"User data is limited to {scenario.user_data_limit} bytes",
                )
            for fault in scenario.faults:
                if fault.matches(action, region, params):
                    if fault.times is not None:
                        fault.times -= 1
                    message = fault.message or fault.code
                    if fault.html:
                        return self._page(start_response, fault.status, message, fault.html)
                    return self._reply(start_response, fault.status, fault.code, message)
        if action and self.front.placement.handles(action, params):
            grouped = self.front.placement.serve(
                action, region, params, start_response, lambda sr: self.app(environ, sr), self._reply
            )
            return self._held(action, grouped)
        if action == "GetConsoleOutput" and params.get("InstanceId") in self.front.console:
            latest = params.get("Latest") == "true" or not self.front.scenario.console_buffered
            return self._console(start_response, params["InstanceId"], latest)
        if not libcloud:
            return self._held(action, self.app(environ, start_response))
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        data = b"".join(self.app(environ, capture))
        data = data.replace(
            b'http://ec2.amazonaws.com/doc/2016-11-15"', b'http://ec2.amazonaws.com/doc/2016-11-15/"'
        )
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        start_response(captured["status"], [*headers, ("Content-Length", str(len(data)))])
        return [data]

    def _held(self, action: str, served: Iterable[bytes]) -> Iterable[bytes]:
        """The answer, after the scenario's delay or gate for this action (moto acted already)."""
        delay = self.front.scenario.delay_after.get(action, 0.0)
        gate = self.front.scenario.hold_after.get(action)
        if not delay and gate is None:
            return served
        data = b"".join(served)
        time.sleep(delay)
        if gate is not None:
            gate.wait(timeout=60)  # a test that failed before opening it must not hang the server
        return [data]

    def _console(self, start_response: StartResponse, instance_id: str, latest: bool = True) -> list[bytes]:
        """GetConsoleOutput with what the instance printed (moto only has a canned boot log)."""
        printed = self.front.console[instance_id] if latest else ""
        raw = printed.encode() if isinstance(printed, str) else printed  # (bytes: not all UTF-8)
        output = base64.b64encode(raw).decode()
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<GetConsoleOutputResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
            f"<requestId>{uuid.uuid4()}</requestId><instanceId>{instance_id}</instanceId>"
            f"<timestamp>{time.strftime('%Y-%m-%dT%H:%M:%S.000Z', time.gmtime())}</timestamp>"
            f"<output>{output}</output></GetConsoleOutputResponse>"
        ).encode()
        start_response("200 OK", [("Content-Type", "text/xml"), ("Content-Length", str(len(xml)))])
        return [xml]

    @staticmethod
    def _page(start_response: StartResponse, status: int, title: str, kind: str) -> list[bytes]:
        if kind == "bare":
            page = f"<html><head><title>{status} {title}</title></head><body>{title}</body></html>\n"
        else:  # HTML5 as many proxies write it: no closing tags, so not XML either
            page = f"<!doctype html>\n<html lang=en>\n<title>{status} {title}</title>\n<h1>{title}</h1>\n"
        body = page.encode()
        start_response(
            _STATUS.get(status, f"{status} Error"),
            [("Content-Type", "text/html"), ("Content-Length", str(len(body)))],
        )
        return [body]

    @staticmethod
    def _reply(start_response: StartResponse, status: int, code: str, message: str) -> list[bytes]:
        xml = _error_xml(code, message)
        start_response(
            _STATUS.get(status, f"{status} Error"),
            [("Content-Type", "text/xml"), ("Content-Length", str(len(xml)))],
        )
        return [xml]


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class MotoFront:
    """moto's WSGI app behind `_FaultFront`, served on a loopback port in a daemon thread."""

    def __init__(self) -> None:
        self.scenario = Scenario()
        self.placement = PlacementGroups()
        """Placement groups (moto has none) and the instances started in each."""
        self.console: dict[str, str | bytes] = {}
        """Instance id -> what it printed to its console (GetConsoleOutput answers with it)."""
        self.libcloud_region = "us-east-1"
        """Region assumed for libcloud's query-signed (SigV2) requests, which name none."""
        app = _FaultFront(DomainDispatcherApplication(create_backend_app), self)
        self._server: BaseWSGIServer = make_server(
            "127.0.0.1", 0, app, threaded=True, request_handler=_QuietHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto-front", daemon=True)

    @classmethod
    def start(cls) -> MotoFront:
        front = cls()
        front._thread.start()
        return front

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        """Wipe moto's state and the scenario (between tests)."""
        req = urllib.request.Request(f"{self.url}/moto-api/reset", data=b"", method="POST")
        urllib.request.urlopen(req, timeout=10).read()
        self.scenario = Scenario()
        self.placement = PlacementGroups()
        self.console = {}

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
