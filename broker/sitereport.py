"""The active scheduler's view of its sites, as it publishes it for the `api` replicas.

Only the scheduler calls backends, so only it learns that a site is sick, that a breaker
opened or that it burst; replicas answer `szb status` and `/metrics` from this report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime


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

    def to_json(self) -> str:
        return json.dumps(
            {
                "unhealthy": self.unhealthy,
                "breakers": self.breakers,
                "blocked": sorted(self.blocked),
                "bursts": [b.isoformat() for b in self.bursts],
            },
            sort_keys=True,
        )

    @staticmethod
    def from_json(text: str) -> SiteReport:
        raw = json.loads(text)
        return SiteReport(
            unhealthy={str(k): str(v) for k, v in raw.get("unhealthy", {}).items()},
            breakers={str(k): str(v) for k, v in raw.get("breakers", {}).items()},
            blocked=frozenset(str(b) for b in raw.get("blocked", [])),
            bursts=tuple(datetime.fromisoformat(b) for b in raw.get("bursts", [])),
        )
