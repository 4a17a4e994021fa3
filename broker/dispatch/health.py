"""Site health: which sites, regions and offers take no new work now, and why.

Three sources: the blocklist (offers and regions blocked for a while after capacity, quota
or preemption errors), one circuit breaker per site (auth/config errors and repeated
failures), and the sites a backend call could not reach or read. Time comes from the clock.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

from adapters.base import AdapterError, AuthError, CapacityError, ConfigError
from broker.burst import is_onprem
from broker.clock import Clock
from broker.dispatch.failover import (
    GANG_NODE_ENDED,
    Blocklist,
    BreakerState,
    CircuitBreaker,
    CircuitBreakers,
    FailoverPolicy,
    NextStep,
)
from broker.dispatch.hung import NEVER_UP
from broker.model import Attempt, SiteId
from broker.policy import Policy
from broker.sitereport import SiteReport

log = logging.getLogger(__name__)

ONPREM_REFUSAL_BLOCK_S = 20.0
"""How long an on-prem offer whose launches keep being refused (capacity, an unrecognised error)
takes no new work: its jobs are placed again after it, not every dispatch pass."""
ONPREM_REFUSALS_TO_BLOCK = 3
"""Refusals of one on-prem offer within `ONPREM_REFUSAL_WINDOW_S` that block it. One is a race
(a reclaimed job's slots still held, say) that frees in moments: blocking the partition for it
took on-prem away from every job, and sent them to the cloud."""
ONPREM_REFUSAL_WINDOW_S = 60.0
OWN_STORAGE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
"""OSErrors of a launch that say the broker host's own storage (its data dir) takes no writes."""
OWN_STORAGE_BLOCK_S = 30.0
"""How long a site whose launch found the broker's own storage full takes no new work: no fault
of the site's (its breaker stays as it was) nor of the job's, but every pass would meet it again."""

K = TypeVar("K", bound=str)
V = TypeVar("V")


class SiteHealth:
    """The blocklist, the breakers and the unhealthy/unreachable sites, as one view."""

    def __init__(self, policy: Callable[[], Policy], clock: Clock) -> None:
        self._policy = policy
        # Blocks and breakers run out on the monotonic clock: a wall-clock step back (NTP, a resumed
        # VM) would hold a site's breaker open, or a region blocked, for as long as the step.
        self.blocklist = Blocklist(clock=clock.ticks)
        self.breakers = CircuitBreakers(failure_threshold=3, reset_after_s=300.0, clock=clock.ticks)
        self.unhealthy: dict[SiteId, str] = {}
        """Sites whose adapter could not be built or whose capacity/offers could not be read."""
        self.unreachable: dict[SiteId, str] = {}
        """Sites reconciliation could not list: no new work goes there until they answer."""
        self.cannot_stop: dict[SiteId, str] = {}
        """Sites that refused (by permission or configuration) to terminate an instance of the
        broker's: each instance started there would be left running too."""
        self.drained: Callable[[], dict[SiteId, str]] = dict
        """Sites an operator drained, with who and why (`broker.drains`: read from the store, which
        every process of a split deployment shares; none without one, as in the simulator)."""
        self.adopted: SiteReport | None = None
        """The active scheduler's view, on an `api` replica (which never calls a backend itself)."""
        self._clock = clock
        self._refusals: dict[str, list[float]] = {}
        """Per on-prem offer key, when its recent launches were refused."""

    def mark_unhealthy(self, site: SiteId, reason: str) -> None:
        self.unhealthy[site] = reason

    def mark_healthy(self, site: SiteId) -> None:
        self.unhealthy.pop(site, None)

    def mark_unreachable(self, site: SiteId, reason: str) -> None:
        self.unreachable[site] = reason

    def mark_reachable(self, site: SiteId) -> None:
        self.unreachable.pop(site, None)

    def record_stop(self, site: SiteId, error: AdapterError | None) -> None:
        """A terminate at `site` went through (None), or failed with `error`: a refusal by
        permission or configuration takes the site out of new work until one goes through."""
        if is_onprem(self._policy(), site):
            return  # (on-prem ends its own work: a refused token there is the breaker's to find)
        if error is None:
            if self.cannot_stop.pop(site, None) is not None:
                log.info("site %s terminates instances again: it takes new work", site)
        elif isinstance(error, (AuthError, ConfigError)):
            why = f"cannot terminate its instances ({type(error).__name__} {error.code}: {error.message})"
            if self.cannot_stop.get(site) is None:
                log.error("site %s takes no new work: it %s", site, why)
            self.cannot_stop[site] = why[:300]

    def _refused_onprem(self, attempt: Attempt, error: AdapterError) -> None:
        """Block an on-prem offer for a short while once its launches keep being refused."""
        now = self._clock.ticks()
        key = attempt.offer.key
        recent = [t for t in self._refusals.get(key, ()) if now - t < ONPREM_REFUSAL_WINDOW_S] + [now]
        self._refusals[key] = recent
        if len(recent) >= ONPREM_REFUSALS_TO_BLOCK:
            self.blocklist.block_offer(attempt.offer, ONPREM_REFUSAL_BLOCK_S, _refused(error))
            self._refusals[key] = []

    def own_storage_failed(self, attempt: Attempt, error: OSError) -> NextStep:
        """A launch that failed on the broker host's own storage: the site is tried again shortly."""
        why = f"the broker's own storage takes no writes ({error.strerror}); tried again shortly"
        self.blocklist.block_site(attempt.site, OWN_STORAGE_BLOCK_S, why)
        return NextStep.BLOCK_OFFER_TRY_NEXT

    def record_failure(self, attempt: Attempt, error: AdapterError) -> NextStep:
        """Block what a failed launch's error says to block; auth/config errors open the site's
        breaker. A cloud launch that timed out, or whose transient errors outlasted its retries,
        has its region blocked for the unhealthy TTL."""
        policy = self._policy()
        ttl = policy.burst.blocklist_ttl
        onprem = is_onprem(policy, attempt.site)
        if isinstance(error, CapacityError) and onprem:
            # On-prem capacity is known from capacity(); a full partition is a race to requeue
            # on, not a stock-out to block for minutes. But a refusal the capacity read does not
            # see (a drained partition whose nodes look free) would be placed again at once and
            # relaunched every pass: a short block once it repeats keeps it to a few a minute.
            self._refused_onprem(attempt, error)
            return NextStep.BLOCK_OFFER_TRY_NEXT
        step = self.blocklist.record(
            error,
            attempt.offer,
            FailoverPolicy(
                capacity_block_s=ttl.capacity.total_seconds(),
                quota_block_s=ttl.quota.total_seconds(),
                unhealthy_block_s=ttl.unhealthy.total_seconds(),
            ),
            # The launch retried in place already; on-prem is home, not a region to go around.
            retried=not onprem,
        )
        if onprem and step is NextStep.FAIL_ATTEMPT and error.code != GANG_NODE_ENDED:
            # An error no table names: the breaker opens only after a few, relaunched each pass.
            self._refused_onprem(attempt, error)
        breaker = self.breakers.get(attempt.site)
        if step == NextStep.OPEN_CIRCUIT_TRY_NEXT:
            breaker.trip(f"{type(error).__name__} {error.code}: {error.message}")
        elif step in (NextStep.RETRY_SAME, NextStep.AVOID_REGION_TRY_NEXT, NextStep.FAIL_ATTEMPT):
            breaker.record_failure(f"{type(error).__name__} {error.code}")
        elif breaker.state is BreakerState.HALF_OPEN:
            breaker.record_success()  # a stock-out or quota answer: the provider takes calls again
        return step

    def record_success(self, attempt: Attempt) -> None:
        self.breakers.get(attempt.site).record_success()

    def record_preemption(self, attempt: Attempt) -> None:
        """Spot recovery: the spot capacity pool that preempted the job (its instance type in its
        zone, spot) is blocked for the next try. The region's other pools and its on-demand offers
        stay open: clouds reclaim spot per pool, to sell that capacity on demand.

        Not on-prem: there the batch system preempted it for other work (Slurm's priorities), and
        the capacity reading says when there is room, as after an on-prem capacity error; a block
        would keep every job off the whole site.
        """
        policy = self._policy()
        if is_onprem(policy, attempt.site):
            return
        ttl = policy.burst.blocklist_ttl.capacity.total_seconds()
        self.blocklist.block_offer(attempt.offer, ttl, "a spot interruption")

    def record_lost(self, attempt: Attempt) -> None:
        """A cloud attempt lost after its launch was accepted (no capacity at boot, a host that
        died, an agent gone silent): its job's next attempt goes to another offer, as after a
        capacity error, not to the same one again; an instance that never came up avoids its
        region, as a launch that timed out does. Not on-prem: there the capacity reading rules;
        not an end its own job caused (`JOB_SIDE`)."""
        policy = self._policy()
        if is_onprem(policy, attempt.site) or attempt.job_side:
            return  # (a job that ended its own instance says nothing of the offer)
        ttl = policy.burst.blocklist_ttl
        why = attempt.error.splitlines()[0][:160] if attempt.error else "lost"
        if attempt.error.startswith(NEVER_UP):
            offer = attempt.offer
            self.blocklist.block_region(offer.site, offer.region, ttl.unhealthy.total_seconds(),
                                        f"an instance there that {why}")
        else:
            lost = f"an attempt lost there ({why})"
            self.blocklist.block_offer(attempt.offer, ttl.capacity.total_seconds(), lost)

    def blocked(self) -> frozenset[str]:
        """The blocklist's keys (offers, regions, sites) as placement reads them."""
        own = self.blocklist.keys()
        return own | self.adopted.blocked if self.adopted is not None else own

    def block_notes(self) -> dict[str, str]:
        """What is blocked now (an offer, `site/region`, a region's spot, a site) and why, for
        operators: a quota or stock-out block keeps work off a region or offer for its TTL."""
        now_s = self._clock.ticks()

        def left(until: float | None) -> str:
            return "" if until is None else f" (for {max(1, round((until - now_s) / 60))} min more)"

        notes = {b.target: b.reason + left(b.until) for b in self.blocklist.active()}
        if self.adopted is not None:  # (an API replica: the scheduler's keys, its reasons in its log)
            notes.update({key: "blocked by the scheduler" for key in self.adopted.blocked - notes.keys()})
        return notes

    def unhealthy_now(self) -> dict[SiteId, str]:
        """Every site that takes no new work now, with the reason (unreachable, sick, breaker open,
        or half-open with its one trial launch unanswered)."""
        burst = self._policy().burst
        reset, trial = burst.blocklist_ttl.unhealthy, burst.attempt_timeout
        self.breakers.set_times(reset.total_seconds(), trial.total_seconds())
        out = {**{s: f"unreachable: {why}" for s, why in self.unreachable.items()}, **self.unhealthy,
               **self.cannot_stop}
        for site, state in self.breakers.states().items():
            if state == BreakerState.OPEN:
                out[SiteId(site)] = f"circuit open: {self.breakers.get(site).reason}"
            elif (why := _probing(self.breakers.get(site))) is not None:
                out[SiteId(site)] = why
        if self.adopted is not None:
            out.update({SiteId(s): why for s, why in self.adopted.unhealthy.items()})
        return self._in_policy(out)

    def begin_trial(self, site: str) -> str | None:
        """A launch is about to go to `site`: when its breaker is half-open this launch is the trial
        call, and the reason the site takes nothing else until it is answered (None otherwise)."""
        breaker = self.breakers.find(site)
        if breaker is None or breaker.state is not BreakerState.HALF_OPEN or not breaker.allow():
            return None
        return _probing(breaker)

    def breaker_states(self) -> dict[str, str]:
        """site -> its breaker's state (closed, open, half_open); the leader's on a replica."""
        # A site not called yet has no breaker object: it is closed, and its series shows so
        # (an alert on "open" must not be the first sign the site exists).
        closed = {str(s.id): BreakerState.CLOSED.value for s in self._policy().sites}
        own = {**closed, **{site: state.value for site, state in self.breakers.states().items()}}
        return self._in_policy({**own, **self.adopted.breakers} if self.adopted is not None else own)

    def _in_policy(self, by_site: dict[K, V]) -> dict[K, V]:
        """`by_site` without the sites a reload removed: what the broker knew of them stays here
        (the site may come back), but /metrics and `szb status` show only sites in force."""
        sites = {s.id for s in self._policy().sites}
        return {k: v for k, v in by_site.items() if k in sites}

    def report(self, bursts: list[datetime], now: datetime) -> SiteReport:
        """What this (leading) process knows of its sites, for the replicas to show."""
        hour_ago = now - timedelta(hours=1)
        return SiteReport(
            unhealthy={str(s): why for s, why in self.unhealthy_now().items()},
            breakers=self.breaker_states(),
            blocked=self.blocked(),
            bursts=tuple(b for b in bursts if b >= hour_ago),
        )


def _refused(error: AdapterError) -> str:
    return f"a launch there was refused ({type(error).__name__}: {error.code}); tried again shortly"


def _probing(breaker: CircuitBreaker) -> str | None:
    """Why a half-open site takes no new work: its one trial launch is unanswered (None: it is not)."""
    if not breaker.probing:
        return None
    return f"circuit half-open: one trial launch in flight (opened after {breaker.reason})"
