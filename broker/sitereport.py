"""The active scheduler's view of its sites, as it publishes it for the `api` replicas.

Only the scheduler calls backends, so only it learns that a site is sick, that a breaker
opened or that it burst; replicas answer `szb status` and `/metrics` from this report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from broker.model import Offer


@dataclass(frozen=True)
class SiteReport:
    unhealthy: dict[str, str]
    """site -> why it takes no new work (the words `szb status` shows an operator)."""
    breakers: dict[str, str]
    """site -> circuit breaker state (closed, open, half_open)."""
    blocked: frozenset[str]
    """Blocklist keys in force (offers, regions, sites)."""
    bursts: tuple[datetime, ...]
    """When the scheduler burst to a cloud within the last hour."""
    onprem: tuple[Offer, ...] = ()
    """On-prem offers as the scheduler last read them: free units and expected waits."""
    totals: dict[str, int] = field(default_factory=dict)
    """Units of each on-prem partition (by partition key) in that reading."""
    read_at: datetime | None = None
    """When the backends were read; None before the scheduler's first reading."""

    def to_json(self) -> str:
        return json.dumps(
            {
                "unhealthy": self.unhealthy,
                "breakers": self.breakers,
                "blocked": sorted(self.blocked),
                "bursts": [b.isoformat() for b in self.bursts],
                "onprem": [o.model_dump(mode="json") for o in self.onprem],
                "totals": self.totals,
                "read_at": self.read_at.isoformat() if self.read_at else None,
            },
            sort_keys=True,
        )

    @staticmethod
    def from_json(text: str) -> SiteReport:
        raw = json.loads(text)
        read_at = raw.get("read_at")
        return SiteReport(
            unhealthy={str(k): str(v) for k, v in raw.get("unhealthy", {}).items()},
            breakers={str(k): str(v) for k, v in raw.get("breakers", {}).items()},
            blocked=frozenset(str(b) for b in raw.get("blocked", [])),
            bursts=tuple(datetime.fromisoformat(b) for b in raw.get("bursts", [])),
            onprem=tuple(Offer.model_validate(o) for o in raw.get("onprem", [])),
            totals={str(k): int(v) for k, v in raw.get("totals", {}).items()},
            read_at=datetime.fromisoformat(read_at) if read_at else None,
        )
