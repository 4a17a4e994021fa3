"""What the pure decision core tells the dispatcher to do with one queued job."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from broker.model import Offer


class Action(StrEnum):
    RUN = "run"
    """Start the job on `offer` now (on-prem, or a burst to a cloud)."""
    WAIT = "wait"
    """Leave it queued; something (capacity, budget, stock) may change."""
    REJECT = "reject"
    """No offer can ever be allowed: the job fails with the reasons."""


@dataclass(frozen=True)
class Decision:
    action: Action
    offer: Offer | None = None
    reasons: tuple[str, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)
    """The numbers behind the decision and the explanation, recorded on the job's event."""
    policy_hash: str = ""
    burst: bool = False
    """True when `offer` is a cloud burst rather than on-prem capacity."""
    explanation: Any = None
    """The placement explanation behind the decision (`broker.placement.Explanation`)."""

    @property
    def summary(self) -> str:
        return "; ".join(self.reasons)
