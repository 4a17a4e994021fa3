"""The cloud adapters keep the adapter contract (`tests.adapter_contract`) against their far ends:
AWS on moto's server, Alibaba on the ECS double, libcloud's EC2 driver on moto's server.

libcloud's `DummyNodeDriver` is not one of them: it forgets node names and metadata and
reuses ids, so no adapter could find an earlier launch there (see test_libcloud.py for the
plumbing it does check)."""

from __future__ import annotations

import pytest

from adapters.alibaba import AlibabaAdapter
from adapters.aws import AwsAdapter
from adapters.base import Adapter, AuthError, CapacityError
from adapters.libcloud import LibcloudAdapter
from broker.model import SiteId
from tests.adapter_contract import AdapterContract, Refusal, default_request
from tests.clouds import test_alibaba, test_aws, test_libcloud
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint
from tests.doubles.moto_front import MotoFront, capacity_fault


class TestAwsContract(AdapterContract):
    unknown_id = "i-0123456789abcdef0"

    @pytest.fixture
    def adapter(self, moto: MotoFront) -> AwsAdapter:
        return test_aws.adapter(moto)

    @pytest.fixture
    def refused(self, adapter: Adapter, moto: MotoFront) -> Refusal:
        offer = self.pick_offer(adapter)
        moto.scenario.faults.append(capacity_fault(offer.instance_type))
        return Refusal(lambda: adapter.submit(default_request(offer, "tok-no-stock")), CapacityError)


class TestAlibabaContract(AdapterContract):
    unknown_id = "i-2ze0000000000000000"

    @pytest.fixture
    def adapter(self, ecs_server: EcsEndpoint, ecs: EcsCloud) -> AlibabaAdapter:
        return test_alibaba.adapter(ecs_server)

    @pytest.fixture
    def refused(self, adapter: Adapter, ecs: EcsCloud) -> Refusal:
        offer = self.pick_offer(adapter)
        ecs.sold_out.add((offer.zone, offer.instance_type))
        return Refusal(lambda: adapter.submit(default_request(offer, "tok-no-stock")), CapacityError)


class TestLibcloudEc2Contract(AdapterContract):
    unknown_id = "i-0123456789abcdef0"

    @pytest.fixture
    def adapter(self, moto: MotoFront) -> LibcloudAdapter:
        return LibcloudAdapter(SiteId("lc-ec2"), test_libcloud.ec2_config(moto))

    @pytest.fixture
    def refused(self, adapter: Adapter, moto: MotoFront) -> Refusal:
        moto.scenario.rejected_access_keys.add("testing")
        return Refusal(adapter.list_owned, AuthError)

