"""A local OpenStack Compute (Nova) endpoint for libcloud's OpenStack driver, with a fault on
server creation: Nova's refusals carry no code of their own, only an HTTP status and words
(`{"forbidden": {"message": "Quota exceeded for cores: …", "code": 403}}`).

`nova_config(endpoint)` is a libcloud site's config for it: a token and base URL given up
front, so the driver makes no Keystone call.
"""

from __future__ import annotations

from typing import Any

from tests.doubles.gce_endpoint import JsonEndpoint

FLAVOR = {"id": "g1", "name": "g1.a100", "ram": 16384, "disk": 100, "vcpus": 8, "swap": "",
          "OS-FLV-EXT-DATA:ephemeral": 0, "rxtx_factor": 1.0, "links": []}


def nova_error(status: int, kind: str, message: str) -> tuple[int, dict[str, Any]]:
    """An error answer as Nova sends it (`forbidden`, `overLimit`, `computeFault` …)."""
    return status, {kind: {"message": message, "code": status}}


class NovaEndpoint(JsonEndpoint):
    def __init__(self) -> None:
        self.fault = nova_error(500, "computeFault", "no fault set")
        self.creates = 0
        super().__init__(self._route)

    def _route(self, method: str, path: str) -> tuple[int, Any]:
        path = path.removeprefix("/v2.1/proj")
        if method == "POST" and path == "/servers":
            self.creates += 1
            return self.fault
        if path == "/flavors/detail":
            return 200, {"flavors": [FLAVOR]}
        if path == "/servers/detail":
            return 200, {"servers": []}
        return nova_error(404, "itemNotFound", f"{path} not found")


def nova_config(endpoint: NovaEndpoint) -> dict[str, Any]:
    base = f"http://127.0.0.1:{endpoint.port}"
    return {
        "driver": "openstack", "driver_args": ["szb", "secret"],
        "driver_kwargs": {"ex_force_auth_url": base, "ex_force_auth_version": "3.x_password",
                          "ex_force_auth_token": "tok", "ex_force_base_url": f"{base}/v2.1/proj",
                          "ex_tenant_name": "proj"},
        "image": "img-1", "region": "RegionOne",
        "instance_types": [{"instance_type": "g1", "accelerator": "A100", "count": 1, "price_per_hour": 2.0}],
    }
