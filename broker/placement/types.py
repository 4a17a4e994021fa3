"""Values of the placement core: its inputs besides offers, and the explained decision."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from broker.model import Offer, SiteId
from broker.policy import SiteFacts
from broker.quota_scope import QuotaScope, scopes

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Reason(NamedTuple):
    """Why an offer was rejected (or what decided it): the rule id and a readable sentence."""

    rule: str
    message: str


class ScoredOffer(NamedTuple):
    """One offer with its verdict; `score` is the expected cost in the policy currency (lower wins).

    Rejected offers are not scored: their `score` is `inf` and `terms` is empty.
    """

    offer: Offer
    allowed: bool
    reasons: tuple[Reason, ...]
    score: float
    terms: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class PlacementContext:
    """Inputs that change between decisions; all injected, never read from the clock or I/O."""

    now: datetime = EPOCH
    blocked: frozenset[str] = frozenset()
    """Offer keys, site ids or `site/region` keys blocked by failover."""
    block_reasons: Mapping[str, str] = field(default_factory=dict)
    """A blocked key -> the error that blocked it (`CapacityError: OperationDenied.NoStock`), for
    the verdict's text; a key without one gets the generic wording."""
    unhealthy_sites: Mapping[SiteId, str] = field(default_factory=dict)
    """Site id -> why it is unhealthy (circuit breaker open)."""
    no_images: Mapping[SiteId, str] = field(default_factory=dict)
    """Site id -> why it cannot run a job's container image (its adapter's reason)."""
    drained_sites: Mapping[SiteId, str] = field(default_factory=dict)
    """Site id -> who drained it and why (`drained by alice: rack maintenance`): an operator took
    it out of service, so it gets no new placements."""
    voucher_balances: Mapping[str, float] | None = None
    """Remaining balance per voucher id; None = the balances written in the policy."""
    quotas: tuple[QuotaScope, ...] = field(init=False, repr=False, compare=False)
    """The quota blocks among `blocked` (`broker.quota_scope`), parsed once here, not per offer."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "quotas", tuple(scopes(self.blocked)))


class Explanation:
    """A placement decision with every offer's verdict, ranked: allowed best-first, then rejected.

    Immutable. `chosen` is decided eagerly; the full ranked tuple `offers` is materialized
    on first access (the explanation of the decision, not the decision itself). `allowed`
    (optional) gives the allowed part alone, so `.allowed` need not build the rejections.
    """

    __slots__ = (
        "_allowed",
        "_chain",
        "_frozen",
        "_offers",
        "_unranked",
        "chosen",
        "currency",
        "decided_at",
        "policy_hash",
        "sites",
    )
    chosen: ScoredOffer | None
    policy_hash: str
    currency: str
    sites: Mapping[str, SiteFacts]
    decided_at: datetime
    _offers: tuple[ScoredOffer, ...] | None
    _chain: Callable[[], tuple[ScoredOffer, ...]] | None
    _allowed: Callable[[], tuple[ScoredOffer, ...]] | None
    _unranked: Sequence[ScoredOffer] | None
    _frozen: bool
    """Set once `__init__` has set every field; `__setattr__` refuses from then on."""

    def __init__(
        self,
        chosen: ScoredOffer | None,
        offers: tuple[ScoredOffer, ...] | None = None,
        policy_hash: str = "",
        *,
        currency: str = "CNY",
        sites: Mapping[str, SiteFacts] | None = None,
        decided_at: datetime = EPOCH,
        ranking: Callable[[], tuple[ScoredOffer, ...]] | None = None,
        allowed: Callable[[], tuple[ScoredOffer, ...]] | None = None,
        unranked: Sequence[ScoredOffer] | None = None,
    ) -> None:
        # Set past `__setattr__`'s frozen check (it is not frozen yet): one per decision adds up.
        put = object.__setattr__
        put(self, "chosen", chosen)
        put(self, "policy_hash", policy_hash)
        put(self, "currency", currency)
        put(self, "sites", sites or {})
        put(self, "decided_at", decided_at)
        put(self, "_offers", offers)
        put(self, "_chain", ranking)
        put(self, "_allowed", allowed)
        put(self, "_unranked", unranked)
        put(self, "_frozen", True)

    def __setattr__(self, name: str, value: Any) -> None:
        # `_offers` stays writable: it memoizes the ranked tuple on the first read of `offers`.
        if name != "_offers" and getattr(self, "_frozen", False):
            raise AttributeError(f"Explanation is immutable ({name})")
        object.__setattr__(self, name, value)

    @property
    def offers(self) -> tuple[ScoredOffer, ...]:
        """Every offer: allowed best-first (the failover order), then rejected in input order."""
        if self._offers is None:
            assert self._chain is not None
            self._offers = self._chain()
        return self._offers

    @property
    def allowed(self) -> tuple[ScoredOffer, ...]:
        """Allowed offers, best first (the failover order); does not build the rejected part."""
        if self._offers is None and self._allowed is not None:
            return self._allowed()
        return tuple(s for s in self.offers if s.allowed)

    @property
    def unranked(self) -> Sequence[ScoredOffer]:
        """Allowed offers in no particular order (for callers that rank by their own key)."""
        if self._unranked is not None:
            return self._unranked
        return self.allowed

    def offer_json(self, scored: ScoredOffer) -> dict[str, Any]:
        o = scored.offer
        facts = self.sites.get(o.site)
        return {
            "site": o.site,
            "country": facts.country if facts else None,
            "residency": facts.residency if facts else None,
            "instance_type": o.instance_type,
            "accelerator": o.accelerator,
            "count": o.count,
            "spot": o.spot,
            "price_per_hour": o.price_per_hour,
            "currency": o.currency,
            "price_read_at": o.price_read_at.isoformat() if o.price_read_at else None,
            "expected_wait_s": o.expected_wait_s,
            "zone": o.zone,
            "region": o.region,
            "allowed": scored.allowed,
            "reasons": [{"rule": r.rule, "message": r.message} for r in scored.reasons],
            "score": round(scored.score, 4) if scored.allowed else None,
            "terms": {k: round(v, 4) for k, v in scored.terms.items()},
        }

    def to_json(self) -> dict[str, Any]:
        """The issue's JSON shape: chosen (or null), every offer, the policy hash."""
        return {
            "chosen": self.offer_json(self.chosen) if self.chosen is not None else None,
            "offers": [self.offer_json(s) for s in self.offers],
            "policy_hash": self.policy_hash,
            "score_currency": self.currency,
            "decided_at": self.decided_at.isoformat(),
        }
