"""Pure failover helpers: what dispatch does after an adapter error, and the state it keeps.

- `classify_next_step(error)` maps each `AdapterError` subclass to a `NextStep`.
- `Blocklist` remembers (offer | region | site) blocks with a TTL on an injected clock.
- `CircuitBreaker` / `CircuitBreakers` keep one closed/open/half-open breaker per provider.
- Retrying a `TransientError` in place is `broker.dispatch.retry`'s.

Nothing here calls a backend, reads the wall clock or sleeps unless given the means to.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from adapters.base import (
    AdapterError,
    AuthError,
    CapacityError,
    ConfigError,
    NotFoundError,
    QuotaError,
    RequestError,
    SpotQuotaError,
    TransientError,
    UnsupportedError,
)
from broker.model import Offer
from broker.quota_scope import QuotaScope
from broker.quota_scope import parse as parse_quota

log = logging.getLogger(__name__)

__all__ = [
    "GANG_NODE_ENDED",
    "AttemptTimeoutError",
    "Block",
    "BlockScope",
    "Blocklist",
    "BreakerState",
    "CircuitBreaker",
    "CircuitBreakers",
    "Clock",
    "FailoverPolicy",
    "NextStep",
    "classify_next_step",
]

Clock = Callable[[], float]
"""Monotonic seconds; `time.monotonic` in production, a fake in tests."""



class AttemptTimeoutError(TransientError):
    """A launch got no answer within its attempt timeout: the region may hang, so the job
    tries elsewhere (an instance may still have started: it is billed as a transient error)."""


class BlockScope(StrEnum):
    OFFER = "offer"
    """One offer key: site/zone-or-region/instance type/market."""
    REGION = "region"
    REGION_SPOT = "region_spot"  # the spot market of one region (its on-demand offers stay open)
    QUOTA = "quota"
    """What one quota counts in a region (`broker.quota_scope`): some types, a market, a gang size."""
    SITE = "site"


class NextStep(StrEnum):
    """What dispatch does after an adapter error (the error tree's second column)."""

    RETRY_SAME = "retry_same"
    BLOCK_OFFER_TRY_NEXT = "block_offer_try_next"
    BLOCK_REGION_TRY_NEXT = "block_region_try_next"
    BLOCK_SPOT_TRY_NEXT = "block_spot_try_next"  # a spot quota: the region's spot offers, quota TTL
    AVOID_REGION_TRY_NEXT = "avoid_region_try_next"
    """A launch there timed out: block the region a while and try the next offer; unlike an
    offer's fault it uses up one of the job's attempts (every region may hang)."""
    OPEN_CIRCUIT_TRY_NEXT = "open_circuit_try_next"
    DROP_OFFER_TRY_NEXT = "drop_offer_try_next"
    TREAT_AS_GONE = "treat_as_gone"
    FAIL_ATTEMPT = "fail_attempt"
    SKIP_SITE_FOR_JOB = "skip_site_for_job"
    """The job's own request was refused: that job goes on to its offers at other sites (failed
    with the reason when none is left); the site is blamed for nothing (`dispatch.own_refusals`)."""

    @property
    def block_scope(self) -> BlockScope | None:
        """The blocklist scope this step records, if any."""
        return _SCOPES.get(self)


_SCOPES: dict[NextStep, BlockScope] = {
    NextStep.BLOCK_OFFER_TRY_NEXT: BlockScope.OFFER,
    NextStep.DROP_OFFER_TRY_NEXT: BlockScope.OFFER,
    NextStep.BLOCK_REGION_TRY_NEXT: BlockScope.REGION,
    NextStep.BLOCK_SPOT_TRY_NEXT: BlockScope.REGION_SPOT,
    NextStep.AVOID_REGION_TRY_NEXT: BlockScope.REGION,
}

# Most specific class first; every AdapterError subclass in adapters.base appears here.
_NEXT_STEPS: tuple[tuple[type[AdapterError], NextStep], ...] = (
    (CapacityError, NextStep.BLOCK_OFFER_TRY_NEXT),
    (SpotQuotaError, NextStep.BLOCK_SPOT_TRY_NEXT),
    (QuotaError, NextStep.BLOCK_REGION_TRY_NEXT),
    (AttemptTimeoutError, NextStep.AVOID_REGION_TRY_NEXT),
    (TransientError, NextStep.RETRY_SAME),
    (AuthError, NextStep.OPEN_CIRCUIT_TRY_NEXT),
    (ConfigError, NextStep.OPEN_CIRCUIT_TRY_NEXT),
    (UnsupportedError, NextStep.DROP_OFFER_TRY_NEXT),
    (RequestError, NextStep.SKIP_SITE_FOR_JOB),
    (NotFoundError, NextStep.TREAT_AS_GONE),
)


GANG_NODE_ENDED = "GangNodeEnded"
"""A resumed gang launch found a node it started already ended (the broker died rolling it back):
the gang relaunches whole, and the offer is not to blame."""


def classify_next_step(error: AdapterError) -> NextStep:
    """Map an adapter error to what dispatch does next; unknown codes fail the attempt (its offer
    blocked for the unhealthy TTL by `Blocklist.record`)."""
    for cls, step in _NEXT_STEPS:
        if isinstance(error, cls):
            return step
    return NextStep.FAIL_ATTEMPT


@dataclass(frozen=True)
class FailoverPolicy:
    """TTLs for blocks; the broker's policy file supplies them, these are only defaults."""

    capacity_block_s: float = 600.0
    """How long an offer stays blocked after a capacity (stock-out) error."""
    quota_block_s: float = 3600.0
    """How long a region stays blocked after a quota error."""
    unhealthy_block_s: float = 600.0
    """How long a region stays blocked after a launch there timed out."""
    unsupported_block_s: float | None = None
    """None: an unsupported offer stays blocked for the life of the blocklist."""


@dataclass(frozen=True)
class Block:
    """One blocklist entry; `until` is None for a block that never expires."""

    key: str
    scope: BlockScope
    until: float | None
    reason: str
    target: str = ""
    """The plain key placement filters on: an offer key, `site/region` or a site id."""


def _offer_key(offer: Offer) -> str:
    return f"offer:{offer.key}"


def _region_key(site: str, region: str) -> str:
    return f"region:{site}/{region or '-'}"


def _spot_key(site: str, region: str) -> str:  # the region's spot market (a spot quota)
    return f"spot:{site}/{region or '-'}"


def _site_key(site: str) -> str:
    return f"site:{site}"


def _quota_covers(block: Block, offer: Offer, nodes: int) -> bool:
    """Is `block` a quota's that counts `offer` for a job of `nodes` nodes? Its scope is read back
    from the target, as placement reads it (`quota_scope.parse`, memoized: one parse per target)."""
    if block.scope is not BlockScope.QUOTA:
        return False
    quota = parse_quota(block.target)
    return quota is not None and quota.covers(offer, nodes)


@dataclass
class Blocklist:
    """Blocked offers, regions and sites, each until a deadline on the injected clock."""

    clock: Clock = time.monotonic
    _blocks: dict[str, Block] = field(default_factory=dict)

    def block_offer(self, offer: Offer, ttl_s: float | None, reason: str) -> Block:
        return self._add(_offer_key(offer), BlockScope.OFFER, ttl_s, reason, offer.key)

    def block_region(self, site: str, region: str, ttl_s: float | None, reason: str) -> Block:
        return self._add(_region_key(site, region), BlockScope.REGION, ttl_s, reason, f"{site}/{region}")

    def block_region_spot(self, site: str, region: str, ttl_s: float | None, reason: str) -> Block:
        """Block the region's spot offers; placement reads the target `site/region/spot`."""
        target = f"{site}/{region}/spot"
        return self._add(_spot_key(site, region), BlockScope.REGION_SPOT, ttl_s, reason, target)

    def block_quota(self, scope: QuotaScope, ttl_s: float | None, reason: str) -> Block:
        """Block what one quota counts; placement reads the target back (`broker.quota_scope`)."""
        return self._add(f"quota:{scope.target}", BlockScope.QUOTA, ttl_s, reason, scope.target)

    def block_site(self, site: str, ttl_s: float | None, reason: str) -> Block:
        return self._add(_site_key(site), BlockScope.SITE, ttl_s, reason, site)

    def blocked(self, offer: Offer, nodes: int = 1) -> Block | None:
        """The block that keeps this offer out for a job of `nodes` nodes (offer, then a quota's,
        then region, then site), or None."""
        now = self.clock()
        keys = [_offer_key(offer), _region_key(offer.site, offer.region), _site_key(offer.site)]
        if offer.spot:
            keys.insert(1, _spot_key(offer.site, offer.region))
        keys[1:1] = [key for key, b in self._blocks.items() if _quota_covers(b, offer, nodes)]
        for key in keys:
            entry = self._blocks.get(key)
            if entry is None:
                continue
            if entry.until is not None and now >= entry.until:
                del self._blocks[key]
                continue
            return entry
        return None

    def active(self) -> list[Block]:
        """Unexpired blocks, sorted by key (for `explain` and the audit log)."""
        now = self.clock()
        return sorted(
            (b for b in self._blocks.values() if b.until is None or now < b.until), key=lambda b: b.key
        )

    def record(
        self, error: AdapterError, offer: Offer, policy: FailoverPolicy, *, retried: bool = False
    ) -> NextStep:
        """Classify `error` and add the block it calls for; returns the step.

        `retried`: the caller already retried a transient error in place (a launch does), so one
        left over means the region does not answer: it is avoided like a timed-out launch."""
        step = classify_next_step(error)
        if retried and step is NextStep.RETRY_SAME:
            step = NextStep.AVOID_REGION_TRY_NEXT
        reason = f"{type(error).__name__}: {error.code}"
        if step is NextStep.BLOCK_OFFER_TRY_NEXT:
            self.block_offer(offer, policy.capacity_block_s, reason)
        elif step is NextStep.DROP_OFFER_TRY_NEXT:
            self.block_offer(offer, policy.unsupported_block_s, reason)
        elif isinstance(error, QuotaError):  # (BLOCK_REGION_TRY_NEXT or BLOCK_SPOT_TRY_NEXT)
            self._block_quota(error, offer, policy.quota_block_s, reason)
        elif step is NextStep.AVOID_REGION_TRY_NEXT:
            why = f"a launch there that timed out or kept failing ({reason})"
            self.block_region(offer.site, offer.region, policy.unhealthy_block_s, why)
        elif step is NextStep.FAIL_ATTEMPT and retried and error.code != GANG_NODE_ENDED:
            # A cloud's code no table names says nothing of scope: the next attempt goes to
            # another offer (a retry of this one would most likely meet it again); the site's
            # breaker counts it, so such codes of many offers at one site take the site out.
            why = f"an error this broker does not recognise ({reason}: {error.message[:120]})"
            self.block_offer(offer, policy.unhealthy_block_s, why)
        return step

    def _block_quota(self, error: QuotaError, offer: Offer, ttl_s: float, reason: str) -> None:
        """Block what a quota refusal counts: the region (its spot market for a spot quota), or
        the types, market and gang size the adapter and the launch narrowed it to."""
        spot = isinstance(error, SpotQuotaError)
        if error.types or error.market != "any" or error.nodes > 1:
            market = "spot" if spot and error.market == "any" else error.market
            scope = QuotaScope(offer.site, offer.region, market, error.types, error.nodes)
            self.block_quota(scope, ttl_s, reason)
        elif spot:
            self.block_region_spot(offer.site, offer.region, ttl_s, reason)
        else:
            self.block_region(offer.site, offer.region, ttl_s, reason)

    def reasons(self) -> dict[str, str]:  # for placement's verdicts: why each key is blocked
        return {b.target: b.reason for b in self.active()}

    def keys(self) -> frozenset[str]:
        """Unexpired blocks as `PlacementContext.blocked` wants them."""
        return frozenset(b.target for b in self.active())

    def _add(self, key: str, scope: BlockScope, ttl_s: float | None, reason: str, target: str) -> Block:
        until = None if ttl_s is None else self.clock() + ttl_s
        old = self._blocks.get(key)
        if old is not None and (old.until is None or (until is not None and old.until > until)):
            return old  # never shorten an existing block
        entry = Block(key=key, scope=scope, until=until, reason=reason, target=target)
        self._blocks[key] = entry
        return entry


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class CircuitBreaker:
    """Closed → open after `failure_threshold` failures (or one `trip`); half-open after
    `reset_after_s`, where one trial call decides: success closes, failure re-opens."""

    failure_threshold: int = 3
    reset_after_s: float = 300.0
    clock: Clock = time.monotonic
    failures: int = 0
    reason: str = ""
    trial_s: float = 1200.0
    """How long a trial may stay unanswered before another is let through (a cancelled one never is)."""
    site: str = ""
    """Whose breaker it is, for its log lines."""
    _opened_at: float | None = None
    _trial_at: float | None = None

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self.clock() - self._opened_at >= self.reset_after_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    @property
    def probing(self) -> bool:
        """Half-open with its one trial call still unanswered: no other call goes meanwhile."""
        at = self._trial_at
        return self.state is BreakerState.HALF_OPEN and at is not None and self.clock() - at < self.trial_s

    def allow(self) -> bool:
        """May a call go to the provider now? In half-open only one trial is let through."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self.probing:
            self._trial_at = self.clock()
            return True
        return False

    def record_success(self) -> None:
        if self._opened_at is not None:  # (open or half-open: the site takes new work again)
            log.info("circuit breaker of site %s closed: a call succeeded (it opened after %s)",
                     self.site, self.reason, extra={"event": "breaker", "site": self.site, "action": "close"})
        self.failures = 0
        self.reason = ""
        self._opened_at = None
        self._trial_at = None

    def record_failure(self, reason: str) -> None:
        self.failures += 1
        self.reason = reason
        if self.state is BreakerState.HALF_OPEN or self.failures >= self.failure_threshold:
            self._open()

    def trip(self, reason: str) -> None:
        """Open at once (auth or config errors: retrying cannot help)."""
        self.failures = max(self.failures + 1, self.failure_threshold)
        self.reason = reason
        self._open()

    def _open(self) -> None:
        if self.state is not BreakerState.OPEN:  # closed, or a failed trial: one line per opening
            log.warning("circuit breaker of site %s opened: %s", self.site, self.reason,
                        extra={"event": "breaker", "site": self.site, "action": "open",
                               "error": self.reason})
        self._opened_at = self.clock()
        self._trial_at = None


@dataclass
class CircuitBreakers:
    """One breaker per provider (site or account), created on first use."""

    failure_threshold: int = 3
    reset_after_s: float = 300.0
    clock: Clock = time.monotonic
    trial_s: float = 1200.0
    _breakers: dict[str, CircuitBreaker] = field(default_factory=dict)

    def get(self, provider: str) -> CircuitBreaker:
        breaker = self._breakers.get(provider)
        if breaker is None:
            breaker = CircuitBreaker(
                self.failure_threshold, self.reset_after_s, self.clock, trial_s=self.trial_s, site=provider
            )
            self._breakers[provider] = breaker
        return breaker

    def find(self, provider: str) -> CircuitBreaker | None:
        """The provider's breaker if it ever had one (`get` makes one)."""
        return self._breakers.get(provider)

    def set_times(self, reset_after_s: float, trial_s: float) -> None:
        """The policy's open time and trial limit, for every breaker (a reload may change them)."""
        self.reset_after_s, self.trial_s = reset_after_s, trial_s
        for breaker in self._breakers.values():
            breaker.reset_after_s, breaker.trial_s = reset_after_s, trial_s

    def states(self) -> dict[str, BreakerState]:
        return {name: b.state for name, b in sorted(self._breakers.items())}
