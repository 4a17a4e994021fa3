from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters._tags import TAG_ATTEMPT, TAG_BROKER, TAG_JOB, TAG_TOKEN
from adapters.alibaba import AlibabaAdapter
from adapters.base import (
    Adapter,
    AuthError,
    CapacityError,
    ConfigError,
    NotFoundError,
    QuotaError,
    TransientError,
    UnsupportedError,
)
from broker.dispatch.retry import RetryPolicy, retry_transient
from broker.model import AttemptState, SiteId
from tests.clouds.conftest import launch
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint, EcsFault

NOW = datetime(2026, 5, 1, tzinfo=UTC)
A10 = "ecs.gn7i-c8g1.2xlarge"
A100 = "ecs.gn7-c12g1.3xlarge"


def config(**extra: Any) -> dict[str, Any]:
    return {
        "region": "cn-beijing",
        "access_key_id": "ak-test",
        "access_key_secret": "sk-test",
        "image_id": "m-szb-base",
        "broker_id": "szb-test",
        "instance_types": [
            {
                "instance_type": A10,
                "accelerator": "A10",
                "count": 1,
                "price_per_hour": 10.0,
                "spot_price_per_hour": 4.0,
            },
            {
                "instance_type": A100,
                "accelerator": "A100",
                "count": 1,
                "price_per_hour": 35.0,
                "zones": ["cn-beijing-i"],
            },
        ],
        **extra,
    }


def adapter(server: EcsEndpoint, **extra: Any) -> AlibabaAdapter:
    return AlibabaAdapter(SiteId("aliyun-bj"), config(**extra), endpoint=server.address, protocol="http")


def test_offers_use_stock_and_describe_price(ecs_server: EcsEndpoint, ecs: EcsCloud) -> None:
    ecs.sold_out.add(("cn-beijing-h", A10))
    a = adapter(ecs_server)
    assert isinstance(a, Adapter)
    offers = {o.key: o for o in a.offers(NOW)}
    assert offers[f"aliyun-bj/cn-beijing-i/{A10}/ondemand"].price_per_hour == 9.5
    assert offers[f"aliyun-bj/cn-beijing-i/{A10}/ondemand"].free is None
    assert offers[f"aliyun-bj/cn-beijing-h/{A10}/ondemand"].free == 0  # WithoutStock
    assert offers[f"aliyun-bj/cn-beijing-i/{A10}/spot"].price_per_hour == pytest.approx(2.85)
    assert offers[f"aliyun-bj/cn-beijing-i/{A100}/ondemand"].price_per_hour == 31.0
    assert all(o.price_read_at == NOW and o.currency == "CNY" for o in offers.values())


@pytest.mark.parametrize("signature", [None, "v2"])
def test_submit_sends_token_tags_userdata_spot_and_zone(
    ecs_server: EcsEndpoint, ecs: EcsCloud, signature: str | None
) -> None:
    a = adapter(ecs_server, **({"signature_algorithm": signature} if signature else {}))
    offer = next(o for o in a.offers(NOW) if o.spot and o.zone == "cn-beijing-h")
    iid = a.submit(launch(offer, "tok-1"))
    run = next(r for r in ecs_server.requests if r.action == "RunInstances")
    assert run.params["ClientToken"] == "tok-1"
    assert run.params["SpotStrategy"] == "SpotAsPriceGo"
    assert run.params["ZoneId"] == "cn-beijing-h"
    assert base64.b64decode(ecs.user_data[iid]).decode().startswith("#!/bin/sh")
    tags = {t["TagKey"]: t["TagValue"] for t in ecs.instances[iid]["Tags"]["Tag"]}
    assert tags == {TAG_BROKER: "szb-test", TAG_JOB: "job-1", TAG_ATTEMPT: "att-1", TAG_TOKEN: "tok-1"}


def test_resubmit_with_same_token_starts_one_instance(ecs_server: EcsEndpoint, ecs: EcsCloud) -> None:
    a = adapter(ecs_server)
    offer = a.offers(NOW)[0]
    first = a.submit(launch(offer, "tok-same"))
    assert a.submit(launch(offer, "tok-same")) == first
    assert len(ecs.instances) == 1


def test_client_token_alone_dedupes_when_the_tag_lookup_misses(
    ecs_server: EcsEndpoint, ecs: EcsCloud
) -> None:
    a = adapter(ecs_server)
    offer = a.offers(NOW)[0]
    first = a.submit(launch(offer, "tok-ct"))
    ecs.instances[first]["Tags"]["Tag"] = []  # tags not yet visible (eventual consistency)
    assert a.submit(launch(offer, "tok-ct")) == first
    assert len(ecs.instances) == 1


def test_status_list_owned_and_cancel(ecs_server: EcsEndpoint, ecs: EcsCloud) -> None:
    a = adapter(ecs_server)
    offer = a.offers(NOW)[0]
    iid = a.submit(launch(offer, "tok-s"))
    states = [a.status(iid).state for _ in range(3)]
    assert states[-1] is AttemptState.RUNNING and states[0] in (AttemptState.PENDING, AttemptState.RUNNING)
    adapter(ecs_server, broker_id="other").submit(launch(offer, "tok-o"))
    assert [(o.backend_id, o.token, o.attempt_id) for o in a.list_owned()] == [(iid, "tok-s", "att-1")]
    a.cancel(iid, "tok-s")
    a.cancel(iid, "tok-s")
    delete = next(r for r in ecs_server.requests if r.action == "DeleteInstances")
    assert delete.params["Force"] in ("True", "true")
    with pytest.raises(NotFoundError) as err:
        a.status(iid)
    assert err.value.code == "InvalidInstanceId.NotFound"
    assert a.list_owned() == []


def test_spot_release_is_preempted_and_stopped_is_lost(ecs_server: EcsEndpoint, ecs: EcsCloud) -> None:
    a = adapter(ecs_server)
    offers = a.offers(NOW)
    spot = a.submit(launch(next(o for o in offers if o.spot), "tok-p"))
    plain = a.submit(launch(next(o for o in offers if not o.spot), "tok-q", attempt="att-2"))
    ecs.reclaim_spot(spot)
    ecs.stop(plain)
    assert a.status(spot).state is AttemptState.PREEMPTED
    assert a.status(plain).state is AttemptState.LOST


def test_a_type_short_of_stock_is_still_offered_and_launches(ecs_server: EcsEndpoint, ecs: EcsCloud) -> None:
    """Review of issues 4 and 6: DescribeAvailableResource's ClosedWithStock ("resources in
    insufficient stock", Status Available) was read as sold out, so a GPU type short of stock,
    which ECS still sells, was never offered (free 0: "no stock" to the burst decision)."""
    ecs.low_stock.add(("cn-beijing-i", A10))
    ecs.sold_out.add(("cn-beijing-h", A10))
    a = adapter(ecs_server)
    offers = {o.key: o for o in a.offers(NOW)}
    low = offers[f"aliyun-bj/cn-beijing-i/{A10}/ondemand"]
    assert low.free is None
    assert offers[f"aliyun-bj/cn-beijing-h/{A10}/ondemand"].free == 0  # WithoutStock
    assert a.submit(launch(low, "tok-low")) in ecs.instances


def test_spot_offers_carry_the_spot_markets_stock(ecs_server: EcsEndpoint, ecs: EcsCloud) -> None:
    """Review of issues 4 and 6: stock was read for pay-as-you-go only (no SpotStrategy), so a
    zone whose on-demand A10s were sold out had its spot A10s refused as "no stock" too (and
    spot sold out where on-demand was not was offered, to fail at RunInstances)."""
    ecs.sold_out.add(("cn-beijing-i", A10))
    ecs.spot_sold_out = {("cn-beijing-h", A10)}
    a = adapter(ecs_server)
    offers = {o.key: o for o in a.offers(NOW)}
    assert offers[f"aliyun-bj/cn-beijing-i/{A10}/ondemand"].free == 0
    assert offers[f"aliyun-bj/cn-beijing-i/{A10}/spot"].free is None
    assert offers[f"aliyun-bj/cn-beijing-h/{A10}/ondemand"].free is None
    assert offers[f"aliyun-bj/cn-beijing-h/{A10}/spot"].free == 0
    assert a.submit(launch(offers[f"aliyun-bj/cn-beijing-i/{A10}/spot"], "tok-sp")) in ecs.instances


def test_no_stock_is_a_capacity_error_with_the_code(ecs_server: EcsEndpoint, ecs: EcsCloud) -> None:
    ecs.sold_out.add(("cn-beijing-i", A100))
    a = adapter(ecs_server)
    offer = next(o for o in a.offers(NOW) if o.instance_type == A100)
    with pytest.raises(CapacityError) as err:
        a.submit(launch(offer, "tok-c"))
    assert err.value.code == "OperationDenied.NoStock"


def test_throttling_is_transient_and_retry_transient_gets_through(
    ecs_server: EcsEndpoint, ecs: EcsCloud
) -> None:
    a = adapter(ecs_server)
    offer = a.offers(NOW)[0]
    ecs.faults.append(
        EcsFault(
            "RunInstances", "Throttling.User", 400, "Request was denied due to user flow control.", times=2
        )
    )
    with pytest.raises(TransientError) as err:
        a.submit(launch(offer, "tok-t"))
    assert err.value.code == "Throttling.User"
    iid = retry_transient(
        lambda: a.submit(launch(offer, "tok-t")), policy=RetryPolicy(), sleep=lambda s: None
    )
    assert iid in ecs.instances


@pytest.mark.parametrize(
    ("fault", "cls"),
    [
        (EcsFault("RunInstances", "QuotaExceed.ElasticQuota", 403), QuotaError),
        (EcsFault("RunInstances", "ServiceUnavailable", 503), TransientError),
        (EcsFault("RunInstances", "Forbidden.RAM", 403), AuthError),
        (EcsFault("RunInstances", "Zone.NotOnSale", 403), UnsupportedError),
    ],
)
def test_wire_errors_map_through_the_table(
    ecs_server: EcsEndpoint, ecs: EcsCloud, fault: EcsFault, cls: type
) -> None:
    a = adapter(ecs_server, live_prices=False)
    ecs.faults.append(fault)
    with pytest.raises(cls) as err:
        a.submit(launch(a.offers(NOW)[0], "tok-w"))
    assert err.value.code == fault.code


def test_an_elastic_quota_refusal_counts_its_instance_type_only(
    ecs_server: EcsEndpoint, ecs: EcsCloud
) -> None:
    """Review (issue 10): "no additional quota for the specified ECS instance type" blocks that type,
    not the region; a disk quota is the region's (every instance has a disk)."""
    a = adapter(ecs_server, live_prices=False)
    offer = a.offers(NOW)[0]
    ecs.faults.append(EcsFault("RunInstances", "QuotaExceed.ElasticQuota", 403, times=1))
    with pytest.raises(QuotaError) as err:
        a.submit(launch(offer, "tok-q1"))
    assert err.value.types == (offer.instance_type,) and err.value.market == "any"
    ecs.faults.append(EcsFault("RunInstances", "QuotaExceed.DiskCapacity", 403))
    with pytest.raises(QuotaError) as err:
        a.submit(launch(offer, "tok-q2"))
    assert err.value.types == ()


def test_bad_image_is_config_error(ecs_server: EcsEndpoint, ecs: EcsCloud) -> None:
    a = adapter(ecs_server, image_id="m-missing", live_prices=False)
    with pytest.raises(ConfigError) as err:
        a.submit(launch(a.offers(NOW)[0], "tok-i"))
    assert err.value.code == "InvalidImageId.NotFound"


def test_bad_credentials_fail_the_signature_check(ecs_server: EcsEndpoint, ecs: EcsCloud) -> None:
    with pytest.raises(AuthError) as err:
        adapter(ecs_server, access_key_secret="wrong").list_owned()
    assert err.value.code == "SignatureDoesNotMatch"
    with pytest.raises(AuthError) as err:
        adapter(ecs_server, access_key_id="ak-unknown").list_owned()
    assert err.value.code == "InvalidAccessKeyId.NotFound"
    assert ecs_server.requests == []  # nothing reached the handler


def test_unreachable_endpoint_is_transient() -> None:
    a = AlibabaAdapter(SiteId("x"), config(), endpoint="127.0.0.1:9", protocol="http")
    with pytest.raises(TransientError):
        a.list_owned()


def test_instances_serve_hardened_metadata_only_unless_the_site_allows_v1(
    ecs_server: EcsEndpoint, ecs: EcsCloud
) -> None:
    # As on EC2: with ECS's default (plain GETs answered) a job's HTTP client tricked into one
    # read the instance's RAM role keys.
    for extra, tokens in (({}, "required"), ({"imds_v1": True}, "optional")):
        a = adapter(ecs_server, **extra)
        a.submit(launch(a.offers(NOW)[0], f"tok-imds-{tokens}"))
        run = [r for r in ecs_server.requests if r.action == "RunInstances"][-1]
        assert run.params["HttpTokens"] == tokens
        assert "HttpPutResponseHopLimit" not in run.params  # ("not available" on ECS)
        assert run.params["HttpEndpoint"] == "enabled"
    with pytest.raises(ConfigError) as err:
        adapter(ecs_server, imds_v1="yes")
    assert "imds_v1" in str(err.value)
