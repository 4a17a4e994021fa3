"""libcloud's GCE and OpenStack drivers: their refusals reach dispatch as what they are.

Found by a held-out review of issue 4: the libcloud adapter names GCE among its drivers, but
read only EC2's and ECS's codes, and a 403 by its status. A quota refusal or a rate limit (both
403 with a `reason`) opened the provider's auth breaker, and a zone's stock-out
(ZONE_RESOURCE_POOL_EXHAUSTED) or an operation's QUOTA_EXCEEDED failed the attempt as unknown,
instead of moving the job to the next offer. OpenStack's refusals, which carry no code, were read
by their status alone. The real GCE and OpenStack drivers against local endpoints.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.base import AdapterError, AuthError, CapacityError, QuotaError, TransientError
from adapters.libcloud import LibcloudAdapter
from broker.dispatch.failover import NextStep, classify_next_step
from broker.model import SiteId
from tests.clouds.conftest import launch
from tests.doubles.gce_endpoint import ZONE, GceEndpoint, failed_operation, gce_driver, http_error
from tests.doubles.nova_endpoint import NovaEndpoint, nova_config, nova_error

NOW = datetime(2026, 5, 1, tzinfo=UTC)


@pytest.fixture
def gce() -> Iterator[GceEndpoint]:
    endpoint = GceEndpoint()
    yield endpoint
    endpoint.stop()


@pytest.mark.parametrize(
    ("fault", "cls", "code", "step"),
    [
        (failed_operation("ZONE_RESOURCE_POOL_EXHAUSTED", f"The zone 'projects/p/zones/{ZONE}' does not have "
                          "enough resources available to fulfill the request."),
         CapacityError, "ZONE_RESOURCE_POOL_EXHAUSTED", NextStep.BLOCK_OFFER_TRY_NEXT),
        (failed_operation("QUOTA_EXCEEDED", "Quota 'NVIDIA_L4_GPUS' exceeded. Limit: 1.0 in us-central1."),
         QuotaError, "QUOTA_EXCEEDED", NextStep.BLOCK_REGION_TRY_NEXT),
        (http_error(403, "quotaExceeded", "Quota 'GPUS_ALL_REGIONS' exceeded. Limit: 0.0 globally."),
         QuotaError, "quotaExceeded", NextStep.BLOCK_REGION_TRY_NEXT),
        (http_error(403, "rateLimitExceeded", "Rate Limit Exceeded"),
         TransientError, "rateLimitExceeded", NextStep.RETRY_SAME),
        (http_error(401, "authError", "Invalid Credentials"),
         AuthError, "authError", NextStep.OPEN_CIRCUIT_TRY_NEXT),
    ],
)
def test_gce_refusals_map_to_what_dispatch_does_next(
    gce: GceEndpoint, tmp_path: Path, fault: tuple[int, dict[str, object]], cls: type[AdapterError],
    code: str, step: NextStep,
) -> None:
    adapter = LibcloudAdapter(
        SiteId("gce-us"),
        {"driver": "gce", "image": "projects/debian-cloud/global/images/debian-12", "location": ZONE,
         "region": "us-central1",
         "instance_types": [{"instance_type": "g2-standard-4", "accelerator": "L4", "count": 1,
                             "price_per_hour": 0.7}]},
        driver=gce_driver(gce, tmp_path),
    )
    gce.fault = fault
    with pytest.raises(AdapterError) as err:
        adapter.submit(launch(adapter.offers(NOW)[0], "tok-1"))
    assert type(err.value) is cls and err.value.code == code
    assert classify_next_step(err.value) is step
    assert gce.inserts == 1


@pytest.fixture
def nova() -> Iterator[NovaEndpoint]:
    endpoint = NovaEndpoint()
    yield endpoint
    endpoint.stop()


@pytest.mark.parametrize(
    ("fault", "cls", "step"),
    [
        (nova_error(403, "forbidden", "Quota exceeded for cores: Requested 8, but already used 96 of 100"),
         QuotaError, NextStep.BLOCK_REGION_TRY_NEXT),
        (nova_error(413, "overLimit", "This request was rate-limited."), TransientError, NextStep.RETRY_SAME),
        (nova_error(500, "computeFault", "No valid host was found. There are not enough hosts available."),
         CapacityError, NextStep.BLOCK_OFFER_TRY_NEXT),
        (nova_error(403, "forbidden", "Policy doesn't allow os_compute_api:servers:create to be performed."),
         AuthError, NextStep.OPEN_CIRCUIT_TRY_NEXT),
    ],
)
def test_openstack_refusals_are_read_by_their_words_not_only_their_status(
    nova: NovaEndpoint, fault: tuple[int, dict[str, object]], cls: type[AdapterError], step: NextStep
) -> None:
    """Nova keeps no code: its quota refusal is a 403 (it opened the auth breaker), its rate
    limit a 413 (an unknown error), its scheduler's "No valid host" a 500 (retried in place)."""
    adapter = LibcloudAdapter(SiteId("os-lab"), nova_config(nova))
    nova.fault = fault
    with pytest.raises(AdapterError) as err:
        adapter.submit(launch(adapter.offers(NOW)[0], "tok-1"))
    assert type(err.value) is cls, err.value
    assert classify_next_step(err.value) is step
    assert nova.creates == 1
