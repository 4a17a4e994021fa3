"""The active scheduler's view of its sites, as it publishes it for the `api` replicas.

Only the scheduler calls backends, so only it learns that a site is sick, that a breaker
opened or that it burst; replicas answer `szb status` and `/metrics` from this report. Fair
share's standings come with it: only the scheduler's book follows every start and end.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from broker.fairshare.standing import QuotaUse, TenantStanding
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
    fair_share: tuple[TenantStanding, ...] | None = None
    """Each tenant's fair-share standing in the scheduler's book; None from a scheduler too old
    to report it (a replica then shows its own book's)."""

    def to_json(self) -> str:
        fair = None if self.fair_share is None else [_standing_json(s) for s in self.fair_share]
        return json.dumps(
            {
                "unhealthy": self.unhealthy,
                "breakers": self.breakers,
                "blocked": sorted(self.blocked),
                "bursts": [b.isoformat() for b in self.bursts],
                "onprem": [o.model_dump(mode="json") for o in self.onprem],
                "totals": self.totals,
                "read_at": self.read_at.isoformat() if self.read_at else None,
                "fair_share": fair,
            },
            sort_keys=True,
        )

    @staticmethod
    def from_json(text: str) -> SiteReport:
        raw = json.loads(text)
        read_at, fair = raw.get("read_at"), raw.get("fair_share")
        return SiteReport(
            unhealthy={str(k): str(v) for k, v in raw.get("unhealthy", {}).items()},
            breakers={str(k): str(v) for k, v in raw.get("breakers", {}).items()},
            blocked=frozenset(str(b) for b in raw.get("blocked", [])),
            bursts=tuple(datetime.fromisoformat(b) for b in raw.get("bursts", [])),
            onprem=tuple(Offer.model_validate(o) for o in raw.get("onprem", [])),
            totals={str(k): int(v) for k, v in raw.get("totals", {}).items()},
            read_at=datetime.fromisoformat(read_at) if read_at else None,
            fair_share=None if fair is None else tuple(_standing_from_json(s) for s in fair),
        )


def _standing_json(s: TenantStanding) -> dict[str, Any]:
    """A standing as the report stores it (a quota as [partition, guaranteed, in_use])."""
    quotas = [[q.partition, q.guaranteed, q.in_use] for q in s.quotas]
    return {"tenant": s.tenant, "weight": s.weight, "usage_share": s.usage_share, "ratio": s.ratio,
            "quotas": quotas}


def _standing_from_json(raw: dict[str, Any]) -> TenantStanding:
    ratio = raw.get("ratio")
    return TenantStanding(
        tenant=str(raw["tenant"]),
        weight=float(raw["weight"]),
        usage_share=float(raw["usage_share"]),
        ratio=None if ratio is None else float(ratio),
        quotas=tuple(QuotaUse(str(p), int(g), int(u)) for p, g, u in raw.get("quotas", [])),
    )
