"""Every cloud adapter turns an endpoint that is down, or hangs up, into a TransientError.

Issue 11, obs. 6: `requests.exceptions.ConnectionError` is not the built-in `ConnectionError`,
so libcloud's errors escaped reconciliation and stopped startup.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from adapters.alibaba import AlibabaAdapter
from adapters.aws import AwsAdapter
from adapters.base import Adapter, TransientError
from adapters.libcloud import LibcloudAdapter
from broker.model import SiteId
from tests.ports import lasting_port


def aws(port: int) -> Adapter:
    return AwsAdapter(
        SiteId("aws"),
        {"region": "us-east-1", "endpoint_url": f"http://127.0.0.1:{port}", "access_key_id": "AKID",
         "secret_access_key": "s", "image_id": "ami-1"},
    )


def alibaba(port: int) -> Adapter:
    return AlibabaAdapter(
        SiteId("ali"),
        {"region": "cn-beijing", "endpoint": f"127.0.0.1:{port}", "protocol": "http",
         "access_key_id": "ak", "access_key_secret": "sk"},
    )


def libcloud(port: int) -> Adapter:
    return LibcloudAdapter(
        SiteId("lc"),
        {"driver": "ec2", "driver_args": ["AKID", "s"],
         "driver_kwargs": {"region": "us-east-1", "host": "127.0.0.1", "port": port, "secure": False},
         "image": "ami-1"},
    )


ADAPTERS: list[Callable[[int], Adapter]] = [aws, alibaba, libcloud]


@pytest.mark.parametrize("make", ADAPTERS, ids=lambda f: f.__name__)
def test_endpoint_down_is_transient(make: Callable[[int], Adapter]) -> None:
    adapter = make(lasting_port())
    calls: list[Callable[[], Any]] = [adapter.list_owned, lambda: adapter.status("i-0123456789abcdef0")]
    for call in calls:
        with pytest.raises(TransientError):
            call()


@pytest.mark.parametrize("make", ADAPTERS, ids=lambda f: f.__name__)
def test_endpoint_hanging_up_is_transient(make: Callable[[int], Adapter], hangs_up: int) -> None:
    adapter = make(hangs_up)
    with pytest.raises(TransientError):
        adapter.list_owned()
