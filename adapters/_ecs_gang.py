"""Gang jobs on ECS: N instances in one deployment set (mixed into `AlibabaAdapter`).

The set is created with the `LowLatency` strategy (ECS's network low-latency placement, the
counterpart of an EC2 cluster placement group) and the attempt's token as its ClientToken, so
creating it again returns the same set. Each node's RunInstances carries `DeploymentSetId`,
its own ClientToken and a rank tag (`adapters._gang`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from alibabacloud_ecs20140526 import models as ecs
from alibabacloud_ecs20140526.client import Client as EcsClient

from adapters._gang import TAG_RANK, CloudGangs, group_name, owned_group
from adapters._tags import TAG_BROKER, TAG_TOKEN
from adapters.base import AdapterError
from broker.model import LaunchRequest, OwnedInstance, SiteId

log = logging.getLogger(__name__)


class EcsGangs(CloudGangs):
    """create_group / find_node / node_address / cancel_gang for `AlibabaAdapter`."""

    GROUP_KIND = "deployment set"
    GROUP_GONE = "InvalidDeploymentSetId.NotFound"

    site: SiteId
    region: str
    broker_id: str
    _client: EcsClient

    if TYPE_CHECKING:  # the adapter's own, used here

        def _errors(self) -> AbstractContextManager[None]: ...
        def _describe(
            self, *, instance_ids: list[str] | None = None, tags: Mapping[str, str] | None = None
        ) -> list[dict[str, Any]]: ...
        def cancel(self, backend_id: str, token: str) -> None: ...

    def create_group(self, request: LaunchRequest) -> str:
        req = ecs.CreateDeploymentSetRequest(
            region_id=self.region,
            deployment_set_name=group_name(self.broker_id, request.token),
            strategy="LowLatency",
            client_token=f"ds-{request.token}"[:64],
        )
        with self._errors():
            body = self._client.create_deployment_set(req).body.to_map()
        group = str(body.get("DeploymentSetId") or "")
        if not group:
            raise AdapterError(self.site, "NoDeploymentSetReturned", f"CreateDeploymentSet returned {body}")
        return group

    def find_node(self, token: str, rank: int) -> str | None:
        found = self._describe(tags={TAG_BROKER: self.broker_id, TAG_TOKEN: token, TAG_RANK: str(rank)})
        return str(found[0]["InstanceId"]) if found else None

    def node_address(self, backend_id: str) -> str:
        found = self._describe(instance_ids=[backend_id])
        if not found:
            return ""
        ips = found[0].get("VpcAttributes", {}).get("PrivateIpAddress", {}).get("IpAddress", [])
        return str(ips[0]) if ips else ""

    def _delete_group(self, group: str) -> None:
        self._client.delete_deployment_set(
            ecs.DeleteDeploymentSetRequest(region_id=self.region, deployment_set_id=group)
        )

    def owned_groups(self) -> list[OwnedInstance]:
        """This broker's deployment sets (named after their attempt's token)."""
        out: list[OwnedInstance] = []
        page = 1
        while True:
            req = ecs.DescribeDeploymentSetsRequest(region_id=self.region, page_number=page, page_size=50)
            with self._errors():
                body = self._client.describe_deployment_sets(req).body.to_map()
            sets = body.get("DeploymentSets", {}).get("DeploymentSet", [])
            for ds in sets:
                group = owned_group(
                    self.site, self.broker_id, ds["DeploymentSetId"], ds.get("DeploymentSetName", "")
                )
                if group is not None:
                    out.append(group)
            if not sets or page * 50 >= int(body.get("TotalCount", 0)):
                return out
            page += 1
