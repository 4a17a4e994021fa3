"""Gang jobs on EC2: N instances in one cluster placement group (mixed into `AwsAdapter`).

The group is named after the attempt's token, so creating it again (a retry, a resumed launch
after a crash) finds it (`InvalidPlacementGroup.Duplicate`). Each node's RunInstances carries
`Placement.GroupName`, its own ClientToken and a rank tag (`adapters._gang`).
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from adapters._gang import TAG_RANK, CloudGangs, group_name, owned_group
from adapters._tags import TAG_BROKER, TAG_TOKEN
from adapters.base import AdapterError
from broker.model import LaunchRequest, OwnedInstance, SiteId

if TYPE_CHECKING:
    from mypy_boto3_ec2.client import EC2Client
    from mypy_boto3_ec2.type_defs import InstanceTypeDef
else:
    EC2Client = Any
    InstanceTypeDef = dict

log = logging.getLogger(__name__)


class Ec2Gangs(CloudGangs):
    """create_group / find_node / node_address / cancel_gang for `AwsAdapter`."""

    GROUP_KIND = "placement group"
    GROUP_GONE = "InvalidPlacementGroup.Unknown"

    site: SiteId
    broker_id: str

    if TYPE_CHECKING:  # the adapter's own, used here

        @property
        def _create(self) -> EC2Client: ...
        @property
        def _read(self) -> EC2Client: ...
        def _errors(self) -> AbstractContextManager[None]: ...
        def _describe(self, filters: list[Any]) -> list[InstanceTypeDef]: ...
        def cancel(self, backend_id: str, token: str) -> None: ...

    def create_group(self, request: LaunchRequest) -> str:
        name = group_name(self.broker_id, request.token)
        tags = [{"Key": TAG_BROKER, "Value": self.broker_id}, {"Key": TAG_TOKEN, "Value": request.token}]
        try:
            with self._errors():
                self._create.create_placement_group(
                    GroupName=name,
                    Strategy="cluster",
                    TagSpecifications=[{"ResourceType": "placement-group", "Tags": tags}],  # type: ignore[misc,list-item]
                )
        except AdapterError as exc:
            if exc.code != "InvalidPlacementGroup.Duplicate":
                raise
        return name

    def find_node(self, token: str, rank: int) -> str | None:
        found = self._describe(
            [
                {"Name": f"tag:{TAG_BROKER}", "Values": [self.broker_id]},
                {"Name": f"tag:{TAG_TOKEN}", "Values": [token]},
                {"Name": f"tag:{TAG_RANK}", "Values": [str(rank)]},
            ]
        )
        return found[0]["InstanceId"] if found else None

    def node_address(self, backend_id: str) -> str:
        with self._errors():
            resp = self._read.describe_instances(InstanceIds=[backend_id])
        found = [i for r in resp.get("Reservations", []) for i in r.get("Instances", [])]
        return str(found[0].get("PrivateIpAddress") or "") if found else ""

    def _delete_group(self, group: str) -> None:
        self._create.delete_placement_group(GroupName=group)

    def owned_groups(self) -> list[OwnedInstance]:
        """This broker's placement groups (named after their attempt's token)."""
        with self._errors():
            groups = self._read.describe_placement_groups().get("PlacementGroups", [])
        found = (owned_group(self.site, self.broker_id, g["GroupName"], g["GroupName"]) for g in groups)
        return [g for g in found if g is not None]
