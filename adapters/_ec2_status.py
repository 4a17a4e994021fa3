"""An EC2 instance's state as an attempt's status, and when EC2 says the instance stopped.

A spend is settled to that stop, not to when the broker learnt of it: an instance whose
bootstrap gave up reporting (the broker down past `report_give_up_s`) powers itself off; the
broker, back later, reads its result from the console and would bill it up to that moment.
EC2 keeps the time of the last state change in `StateTransitionReason` ("User initiated
(2026-12-03 10:00:00 GMT)"; moto writes "UTC").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from adapters._tags import TAG_CANCELLED
from broker.model import JOB_SIDE, AttemptState, AttemptStatus

_WHEN = re.compile(r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (?:GMT|UTC)\)")
_STOPPED = ("stopping", "stopped", "shutting-down", "terminated")
_SPOT_REASONS = {"Server.SpotInstanceTermination", "Server.SpotInstanceShutdown"}
_JOB_REASONS = {"Client.InstanceInitiatedShutdown", "Client.UserInitiatedShutdown"}
"""Shut down from inside (the job ran `poweroff`) or by an API call not the broker's (which tags
what it ends cancelled): the job's doing, not the offer's (EC2 User Guide, "State change reasons")."""


def with_stop_time(inst: Mapping[str, Any], status: AttemptStatus) -> AttemptStatus:
    """`status` of a stopped instance with the time its stop began (`stopped_at`), when EC2 says."""
    if not status.state.terminal or inst.get("State", {}).get("Name") not in _STOPPED:
        return status
    found = _WHEN.search(str(inst.get("StateTransitionReason") or ""))
    if found is None:
        return status
    at = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    return status.model_copy(update={"stopped_at": at})


def status_of(inst: Mapping[str, Any]) -> AttemptStatus:
    """The attempt's status from its instance (DescribeInstances), before any console read."""
    state = inst.get("State", {}).get("Name", "")
    if state == "pending":
        return AttemptStatus(state=AttemptState.PENDING, message="EC2 state pending")
    if state == "running":
        return AttemptStatus(state=AttemptState.RUNNING, message="EC2 state running")
    reason = inst.get("StateReason", {})
    code, text = reason.get("Code", ""), reason.get("Message", "")
    if code in _SPOT_REASONS:
        return AttemptStatus(state=AttemptState.PREEMPTED, message=f"spot interruption: {code}")
    tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
    if TAG_CANCELLED in tags:
        return AttemptStatus(state=AttemptState.CANCELLED, message=f"cancelled; EC2 state {state}")
    lost = f"EC2 state {state} before the job reported: {code} {text}".strip()
    return AttemptStatus(state=AttemptState.LOST, message=JOB_SIDE + lost if code in _JOB_REASONS else lost)
