"""A local Compute Engine endpoint for libcloud's GCE driver, with a fault on instance inserts.

It answers the reads a launch makes (zones, machine types, the default network, the disk type)
and answers `POST .../instances` with `fault`: an HTTP error (a 403 carrying a `reason`) or an
operation that ended with an error code (GCE reports a zone's stock-out so), as Compute Engine
sends them. `gce_driver(endpoint, folder)` builds libcloud's real GCENodeDriver against it: a
service-account key made on the spot and a cached OAuth token, so nothing leaves the host.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from libcloud.compute.drivers.gce import GCENodeDriver

ZONE = "us-central1-a"
_BASE = "https://www.googleapis.com/compute/v1/projects/p"
_ZONE = {"kind": "compute#zone", "id": "1", "name": ZONE, "status": "UP",
         "selfLink": f"{_BASE}/zones/{ZONE}", "region": f"{_BASE}/regions/us-central1"}
_SIZE = {"kind": "compute#machineType", "id": "4", "name": "g2-standard-4", "guestCpus": 4, "memoryMb": 16384,
         "zone": ZONE, "selfLink": f"{_BASE}/zones/{ZONE}/machineTypes/g2-standard-4",
         "description": "4 vCPUs, 16 GB RAM", "maximumPersistentDisks": 128,
         "maximumPersistentDisksSizeGb": "263168", "imageSpaceGb": 0}
_READS: dict[str, Any] = {
    "/zones": {"items": [_ZONE]},
    f"/zones/{ZONE}": _ZONE,
    "/aggregated/instances": {"items": {}},
    "/aggregated/machineTypes": {"items": {f"zones/{ZONE}": {"machineTypes": [_SIZE]}}},
    f"/zones/{ZONE}/machineTypes": {"items": [_SIZE]},
    "/global/networks/default": {"kind": "compute#network", "id": "2", "name": "default",
                                 "selfLink": f"{_BASE}/global/networks/default"},
    f"/zones/{ZONE}/diskTypes/pd-standard": {
        "kind": "compute#diskType", "id": "3", "name": "pd-standard", "zone": f"{_BASE}/zones/{ZONE}",
        "selfLink": f"{_BASE}/zones/{ZONE}/diskTypes/pd-standard", "validDiskSize": "10GB-65536GB",
        "defaultDiskSizeGb": "500"},
}


def http_error(status: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
    """An HTTP error answer as the Compute Engine API sends it (`errors[].reason`)."""
    return status, {"error": {"code": status, "message": message,
                              "errors": [{"domain": "usageLimits", "reason": reason, "message": message}]}}


def failed_operation(code: str, message: str) -> tuple[int, dict[str, Any]]:
    """An insert accepted and then failed: a DONE operation carrying the error code."""
    return 200, {"kind": "compute#operation", "status": "DONE", "operationType": "insert",
                 "error": {"errors": [{"code": code, "message": message}]}}


Route = Callable[[str, str], tuple[int, Any]]
"""(method, path without its query) -> (HTTP status, JSON body)."""


class JsonEndpoint:
    """A local HTTP endpoint answering JSON by `route` (a cloud API's double for libcloud drivers)."""

    def __init__(self, route: Route) -> None:
        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, body = route(self.command, self.path.split("?")[0])
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class GceEndpoint(JsonEndpoint):
    def __init__(self) -> None:
        self.fault: tuple[int, dict[str, Any]] = failed_operation("INTERNAL", "no fault set")
        self.inserts = 0
        super().__init__(self._route)

    def _route(self, method: str, path: str) -> tuple[int, Any]:
        path = path.removeprefix("/compute/v1/projects/p")
        if method == "POST" and path == f"/zones/{ZONE}/instances":
            self.inserts += 1
            return self.fault
        if path in _READS:
            return 200, _READS[path]
        return http_error(404, "notFound", f"{path} was not found")


def gce_driver(endpoint: GceEndpoint, folder: Path) -> GCENodeDriver:
    """libcloud's GCE driver on `endpoint`, authenticated by a cached token (no OAuth call)."""
    key = folder / "sa.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    token = folder / "token.json"
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    token.write_text(json.dumps({"access_token": "t", "token_type": "Bearer",
                                 "expire_time": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}))
    driver = GCENodeDriver("szb@p.iam.gserviceaccount.com", str(key), project="p", credential_file=str(token))
    driver.connection.secure = False
    driver.connection.connect(host="127.0.0.1", port=endpoint.port)
    return driver
