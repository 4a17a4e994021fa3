"""EC2 placement groups for the moto front (moto 5 has none): CreatePlacementGroup,
DeletePlacementGroup, DescribePlacementGroups and RunInstances' `Placement.GroupName`.

Answers use EC2's wire shapes (query API 2016-11-15) and its documented error codes:
`InvalidPlacementGroup.Duplicate` on a second create, `InvalidPlacementGroup.Unknown` for a
group that does not exist, `InvalidPlacementGroup.InUse` when deleting a group that still
holds instances that are not terminated. Membership is learnt from moto's RunInstances answer.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID

StartResponse = Callable[..., Any]
ErrorReply = Callable[[StartResponse, int, str, str], list[bytes]]
_NS = "http://ec2.amazonaws.com/doc/2016-11-15/"
_STRATEGIES = ("cluster", "spread", "partition")
_GONE = ("terminated", "shutting-down")


@dataclass
class PlacementGroups:
    """Placement groups per region, and which instances each holds."""

    groups: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    members: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handles(self, action: str, params: dict[str, str]) -> bool:
        if action == "RunInstances":
            return bool(params.get("Placement.GroupName"))
        return action in ("CreatePlacementGroup", "DeletePlacementGroup", "DescribePlacementGroups")

    def serve(
        self,
        action: str,
        region: str,
        params: dict[str, str],
        start_response: StartResponse,
        app: Callable[[StartResponse], Iterable[bytes]],
        error: ErrorReply,
    ) -> Iterable[bytes]:
        name = params.get("GroupName") or params.get("Placement.GroupName") or ""
        key = (region, name)
        if action == "CreatePlacementGroup":
            strategy = params.get("Strategy", "")
            if strategy not in _STRATEGIES:
                return error(start_response, 400, "InvalidParameterValue", f"Invalid strategy {strategy!r}")
            with self.lock:
                if key in self.groups:
                    return error(
                        start_response,
                        400,
                        "InvalidPlacementGroup.Duplicate",
                        f"The Placement Group '{name}' already exists.",
                    )
                group = {
                    "groupName": name,
                    "state": "available",
                    "strategy": strategy,
                    "groupId": "pg-" + uuid.uuid4().hex[:17],
                }
                self.groups[key] = group
                self.members[key] = set()
            return _ok(
                start_response,
                action,
                f"<placementGroup>{_item(group)}</placementGroup><return>true</return>",
            )
        if action == "DescribePlacementGroups":
            wanted = [v for k, v in params.items() if k.startswith("GroupName.")]
            with self.lock:
                found = [
                    g for (r, n), g in self.groups.items() if r == region and (not wanted or n in wanted)
                ]
            missing = set(wanted) - {g["groupName"] for g in found}
            if missing:
                return error(
                    start_response,
                    400,
                    "InvalidPlacementGroup.Unknown",
                    f"The Placement Group '{sorted(missing)[0]}' is unknown.",
                )
            items = "".join(f"<item>{_item(g)}</item>" for g in found)
            return _ok(start_response, action, f"<placementGroupSet>{items}</placementGroupSet>")
        with self.lock:
            if key not in self.groups:
                return error(
                    start_response,
                    400,
                    "InvalidPlacementGroup.Unknown",
                    f"The Placement Group '{name}' is unknown.",
                )
        if action == "DeletePlacementGroup":
            if any(_state(region, i) not in _GONE for i in self.members.get(key, set())):
                return error(
                    start_response,
                    400,
                    "InvalidPlacementGroup.InUse",
                    f"The placement group '{name}' is in use and cannot be deleted.",
                )
            with self.lock:
                del self.groups[key]
                self.members.pop(key, None)
            return _ok(start_response, action, "<return>true</return>")
        return self._run(key, start_response, app)

    def _run(
        self,
        key: tuple[str, str],
        start_response: StartResponse,
        app: Callable[[StartResponse], Iterable[bytes]],
    ) -> Iterable[bytes]:
        """RunInstances into a group: moto starts the instances; the group learns their ids."""
        data = b"".join(app(start_response))
        ids = re.findall(rb"<instanceId>(i-[0-9a-f]+)</instanceId>", data)
        with self.lock:
            self.members.setdefault(key, set()).update(i.decode() for i in ids)
        return [data]

    def group_of(self, instance_id: str) -> str | None:
        """The name of the group an instance was started in, if any."""
        with self.lock:
            for (_, name), ids in self.members.items():
                if instance_id in ids:
                    return name
        return None


def _state(region: str, instance_id: str) -> str:
    from moto.ec2.models import ec2_backends

    try:
        return str(ec2_backends[DEFAULT_ACCOUNT_ID][region].get_instance(instance_id).state)
    except Exception:
        return "terminated"


def _item(group: dict[str, str]) -> str:
    return "".join(f"<{k}>{v}</{k}>" for k, v in group.items())


def _ok(start_response: StartResponse, action: str, inner: str) -> list[bytes]:
    xml = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<{action}Response xmlns="{_NS}">'
        f"<requestId>{uuid.uuid4()}</requestId>{inner}</{action}Response>"
    ).encode()
    start_response("200 OK", [("Content-Type", "text/xml"), ("Content-Length", str(len(xml)))])
    return [xml]
