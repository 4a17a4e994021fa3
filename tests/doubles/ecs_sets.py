"""Deployment sets for the ECS double: CreateDeploymentSet, DeleteDeploymentSet, and RunInstances'
`DeploymentSetId`, with the documented bodies and error codes (ECS API 2014-05-26:
CreateDeploymentSet returns `DeploymentSetId` and honours `ClientToken`; DescribeDeploymentSets
pages `DeploymentSets.DeploymentSet` with each set's `InstanceIds`; DeleteDeploymentSet
refuses a set that still holds instances with 403 `DependencyViolation.NotEmpty`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

Body = dict[str, Any]
Reply = tuple[int, Body]

STRATEGIES = ("Availability", "AvailabilityGroup", "LowLatency")


def _error(status: int, code: str, message: str) -> Reply:
    return status, {
        "RequestId": str(uuid.uuid4()).upper(),
        "HostId": "ecs.aliyuncs.com",
        "Code": code,
        "Message": message,
    }


class DeploymentSets:
    """The deployment-set half of `EcsCloud` (mixed in; state lives on the cloud object)."""

    deployment_sets: dict[str, Body]
    set_tokens: dict[str, str]
    instances: dict[str, Body]

    def create_deployment_set(self, p: Mapping[str, str]) -> Reply:
        token = p.get("ClientToken")
        if token and token in self.set_tokens:
            return 200, {"RequestId": str(uuid.uuid4()), "DeploymentSetId": self.set_tokens[token]}
        strategy = p.get("Strategy", "Availability")
        if strategy not in STRATEGIES:
            return _error(400, "InvalidStrategy.Malformed", "The specified Strategy is not valid.")
        name = p.get("DeploymentSetName", "")
        if name and not 2 <= len(name) <= 128:
            return _error(400, "InvalidDeploymentSetName.Malformed", "The specified name is not valid.")
        ds = "ds-" + uuid.uuid4().hex[:20]
        self.deployment_sets[ds] = {
            "DeploymentSetId": ds,
            "DeploymentSetName": name,
            "DeploymentStrategy": strategy,
            "RegionId": p.get("RegionId", ""),
        }
        if token:
            self.set_tokens[token] = ds
        return 200, {"RequestId": str(uuid.uuid4()), "DeploymentSetId": ds}

    def delete_deployment_set(self, p: Mapping[str, str]) -> Reply:
        ds = p.get("DeploymentSetId", "")
        if not ds:
            return _error(
                400,
                "MissingParameter",
                'The input parameter "DeploymentSetId" that is mandatory '
                "for processing this request is not supplied.",
            )
        if ds not in self.deployment_sets:
            return _error(
                404, "InvalidDeploymentSetId.NotFound", "The specified DeploymentSetId does not exist."
            )
        if any(i.get("DeploymentSetId") == ds for i in self.instances.values()):
            return _error(
                403,
                "DependencyViolation.NotEmpty",
                "There are still instance(s) in the specified DeploymentSetId.",
            )
        del self.deployment_sets[ds]
        return 200, {"RequestId": str(uuid.uuid4())}

    def describe_deployment_sets(self, p: Mapping[str, str]) -> Reply:
        wanted = json.loads(p["DeploymentSetIds"]) if p.get("DeploymentSetIds") else None
        found = [
            {
                **ds,
                "InstanceAmount": len(members := self._members(ds["DeploymentSetId"])),
                "InstanceIds": {"InstanceId": members},
            }
            for ds in self.deployment_sets.values()
            if (wanted is None or ds["DeploymentSetId"] in wanted)
            and (not p.get("DeploymentSetName") or ds["DeploymentSetName"] == p["DeploymentSetName"])
        ]
        number, size = int(p.get("PageNumber", "1")), int(p.get("PageSize", "10"))
        return 200, {
            "RequestId": str(uuid.uuid4()),
            "RegionId": p.get("RegionId", ""),
            "TotalCount": len(found),
            "PageNumber": number,
            "PageSize": size,
            "DeploymentSets": {"DeploymentSet": found[(number - 1) * size : number * size]},
        }

    def _members(self, ds: str) -> list[str]:
        return [iid for iid, inst in self.instances.items() if inst.get("DeploymentSetId") == ds]

    def check_deployment_set(self, p: Mapping[str, str]) -> Reply | None:
        """RunInstances' `DeploymentSetId` must name an existing set (None: fine)."""
        ds = p.get("DeploymentSetId")
        if ds and ds not in self.deployment_sets:
            return _error(
                404, "InvalidDeploymentSetId.NotFound", "The specified DeploymentSetId does not exist."
            )
        return None
