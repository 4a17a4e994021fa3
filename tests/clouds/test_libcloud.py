from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest
from libcloud.common.exceptions import BaseHTTPError, RateLimitReachedError
from libcloud.common.types import InvalidCredsError, MalformedResponseError, ServiceUnavailableError

from adapters.base import (
    AdapterError,
    AuthError,
    CapacityError,
    ConfigError,
    NotFoundError,
    TransientError,
)
from adapters.libcloud import LibcloudAdapter, map_libcloud_errors
from broker.model import AttemptState, SiteId
from tests.clouds.conftest import launch
from tests.clouds.test_aws import ec2
from tests.doubles.moto_front import AwsFault, MotoFront, capacity_fault

NOW = datetime(2026, 5, 1, tzinfo=UTC)


def ec2_config(moto: MotoFront, **extra: Any) -> dict[str, Any]:
    return {
        "driver": "ec2",
        "driver_args": ["testing", "testing"],
        "driver_kwargs": {"region": "us-east-1", "host": "127.0.0.1", "port": moto.port, "secure": False},
        "image": "ami-12c6146b",
        "userdata_kwarg": "ex_userdata",
        "metadata_kwarg": "ex_metadata",
        "broker_id": "szb-test",
        "instance_types": [
            {"instance_type": "p4d.24xlarge", "accelerator": "A100", "count": 8, "price_per_hour": 32.77}
        ],
        **extra,
    }


def test_ec2_driver_against_moto_full_cycle(moto: MotoFront) -> None:
    a = LibcloudAdapter(SiteId("lc-ec2"), ec2_config(moto))
    offer = a.offers(NOW)[0]
    assert not offer.spot and offer.currency == "USD"
    node_id = a.submit(launch(offer, "tok-1"))
    assert a.submit(launch(offer, "tok-1")) == node_id  # found by name: one node
    assert moto.scenario.count("RunInstances") == 1
    assert a.status(node_id).state in (AttemptState.PENDING, AttemptState.RUNNING)
    owned = a.list_owned()
    assert [(o.backend_id, o.token, o.job_id) for o in owned] == [(node_id, "tok-1", "job-1")]
    a.cancel(node_id, "tok-1")
    a.cancel(node_id, "tok-1")
    assert a.status(node_id).state is AttemptState.LOST
    assert a.list_owned() == []


def test_ec2_driver_capacity_error_keeps_the_code(moto: MotoFront) -> None:
    moto.scenario.faults.append(capacity_fault("p4d.24xlarge"))
    a = LibcloudAdapter(SiteId("lc-ec2"), ec2_config(moto))
    with pytest.raises(CapacityError) as err:
        a.submit(launch(a.offers(NOW)[0], "tok-c"))
    assert err.value.code == "InsufficientInstanceCapacity"


def test_ec2_driver_bad_credentials(moto: MotoFront) -> None:
    moto.scenario.rejected_access_keys.add("testing")
    a = LibcloudAdapter(SiteId("lc-ec2"), ec2_config(moto))
    with pytest.raises(AuthError):
        a.list_owned()


def test_dummy_driver_plumbing() -> None:
    a = LibcloudAdapter(
        SiteId("lc-dummy"),
        {
            "driver": "dummy",
            "image": "i2",
            "instance_types": [{"instance_type": "1", "price_per_hour": 4.0}],
        },
    )
    node_id = a.submit(launch(a.offers(NOW)[0], "tok-d"))
    assert a.status(node_id).state is AttemptState.RUNNING
    a.cancel(node_id, "tok-d")
    with pytest.raises(NotFoundError):
        a.status(node_id)
    assert "spot" in a.unsupported()


def test_unknown_driver_and_size_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        LibcloudAdapter(SiteId("x"), {"driver": "no-such-cloud"})
    a = LibcloudAdapter(
        SiteId("x"),
        {
            "driver": "dummy",
            "image": "i2",
            "instance_types": [{"instance_type": "huge", "price_per_hour": 1}],
        },
    )
    with pytest.raises(ConfigError) as err:
        a.submit(launch(a.offers(NOW)[0], "t"))
    assert err.value.code == "UnknownSize"


@pytest.mark.parametrize(
    ("exc", "cls", "code"),
    [
        (RateLimitReachedError(), TransientError, "RateLimitReachedError"),
        (InvalidCredsError(), AuthError, "InvalidCredsError"),
        (ServiceUnavailableError(), TransientError, "ServiceUnavailableError"),
        (MalformedResponseError("bad"), TransientError, "MalformedResponseError"),
        (
            BaseHTTPError(500, "InsufficientInstanceCapacity: none left"),
            CapacityError,
            "InsufficientInstanceCapacity",
        ),
        (
            BaseHTTPError(403, "{'code': 'OperationDenied.NoStock', 'message': 'sold out'}"),
            CapacityError,
            "OperationDenied.NoStock",
        ),
        (BaseHTTPError(404, "gone"), NotFoundError, "HTTP404"),
        (BaseHTTPError(401, "who are you"), AuthError, "HTTP401"),
        (BaseHTTPError(502, "bad gateway"), TransientError, "HTTP502"),
        (BaseHTTPError(418, "teapot"), AdapterError, "BaseHTTPError"),
    ],
)
def test_libcloud_exceptions_map_through_one_table(exc: Exception, cls: type, code: str) -> None:
    with pytest.raises(AdapterError) as err, map_libcloud_errors("lc"):
        raise exc
    assert type(err.value) is cls
    assert err.value.code == code
    assert err.value.__cause__ is exc


def test_a_console_holding_bytes_that_are_not_utf8_still_gives_the_result(moto: MotoFront) -> None:
    """Found by a held-out review of issue 11: libcloud's EC2 driver decodes the console strictly,
    and serial consoles carry any byte; the poll failed for ever and the job stayed RUNNING."""
    a = LibcloudAdapter(SiteId("lc-ec2"), ec2_config(moto))
    node_id = a.submit(launch(a.offers(NOW)[0], "tok-b", attempt="att-b"))
    payload = base64.b64encode(b'{"exit_code": 0, "log_tail": "done\\n"}').decode()
    moto.console[node_id] = b"\xff\xfe BIOS noise\n" + f"[cloud-init] SZB-RESULT att-b {payload}\n".encode()
    found = a.kept_result(node_id)
    assert found is not None and found.state is AttemptState.SUCCEEDED and found.exit_code == 0, found


def test_ec2_nodes_serve_imdsv2_only_unless_the_site_allows_v1(moto: MotoFront) -> None:
    # libcloud's create_node has no MetadataOptions: its EC2 nodes kept IMDSv1 on, so a job's HTTP
    # client tricked into a plain GET of 169.254.169.254 (SSRF) read the instance profile's keys.
    client = ec2(moto)
    for extra, tokens, hops in (({}, "required", 1), ({"imds_v1": True, "imds_hop_limit": 2}, "optional", 2)):
        a = LibcloudAdapter(SiteId("lc-ec2"), ec2_config(moto, **extra))
        node_id = a.submit(launch(a.offers(NOW)[0], f"tok-imds-{tokens}"))
        inst = client.describe_instances(InstanceIds=[node_id])["Reservations"][0]["Instances"][0]
        assert inst["MetadataOptions"]["HttpTokens"] == tokens
        assert inst["MetadataOptions"]["HttpPutResponseHopLimit"] == hops
    for bad in ({"imds_v1": "no"}, {"imds_hop_limit": 0}):
        with pytest.raises(ConfigError) as err:
            LibcloudAdapter(SiteId("lc-ec2"), ec2_config(moto, **bad))
        assert next(iter(bad)) in str(err.value)


def test_a_node_whose_metadata_options_ec2_refuses_still_runs_its_job(moto: MotoFront) -> None:
    # (an EC2-compatible endpoint without the call): the launch stands, with a warning
    moto.scenario.faults.append(AwsFault("ModifyInstanceMetadataOptions", "InvalidAction", status=400))
    a = LibcloudAdapter(SiteId("lc-ec2"), ec2_config(moto))
    node_id = a.submit(launch(a.offers(NOW)[0], "tok-imds-refused"))
    assert a.status(node_id).state in (AttemptState.PENDING, AttemptState.RUNNING)
    assert moto.scenario.count("RunInstances") == 1
    assert moto.scenario.count("ModifyInstanceMetadataOptions") == 1
