"""Per-tenant quotas on what the API accepts: sizes, counts, submit and read rates, watch streams.

Limits come from the policy (`limits:` with per-tenant overrides, see `broker.policy.schema`).
The submit rate is a token bucket per tenant on an injected monotonic clock; a batch takes one
token per job, all or nothing. Nothing here does I/O: the caller passes the counts it read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from broker.errors import BrokerError
from broker.model import JobSpec, TenantId
from broker.policy.schema_parts import Limits, LimitsOverride

if TYPE_CHECKING:
    from broker.policy import Policy

Monotonic = Callable[[], float]
"""Seconds on a clock that never goes back (`time.monotonic` in production)."""

LimitsFn = Callable[[TenantId], Limits]


class QuotaExceededError(BrokerError):
    """A tenant went over one of its limits; nothing of the request was stored."""

    def __init__(
        self, tenant: TenantId, limit: str, value: float, description: str, *,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"tenant {tenant}: {limit} ({value:g}) exceeded: {description}")
        self.tenant = tenant
        self.limit = limit
        self.value = value
        self.description = description
        self.retry_after_s = retry_after_s
        """When the same request would be taken (a rate's tokens refilled); None: not by waiting."""


class TokenBucket:
    """`burst` tokens at most, refilled at `rate` per second; `take(n)` is all or nothing."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at = now

    def level(self, now: float) -> float:
        """Tokens available at `now` (refills lazily)."""
        if now > self._at:
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
            self._at = now
        return self._tokens

    def take(self, n: int, now: float) -> bool:
        if self.level(now) + 1e-9 < n:
            return False
        self._tokens -= n
        return True


@dataclass(frozen=True)
class QuotaUsage:
    """A tenant's limits next to what it uses now (shown by `szb status`)."""

    limits: Limits
    unfinished_jobs: int
    watch_streams: int
    submit_tokens: float


class Quotas:
    """Tracks the mutable side of quotas (buckets, open watch streams) for every tenant."""

    def __init__(
        self,
        limits_for: LimitsFn,
        *,
        monotonic: Monotonic = time.monotonic,
        version: Callable[[], object] | None = None,
    ) -> None:
        self._limits_for = limits_for
        self._version = version
        """The policy in force (its hash): each tenant's limits are resolved once per policy."""
        self._resolved: tuple[object, dict[TenantId, Limits]] = (None, {})
        self._monotonic = monotonic
        self._buckets: dict[TenantId, TokenBucket] = {}
        self._reads: dict[TenantId, TokenBucket] = {}
        self._watches: dict[TenantId, int] = {}
        self._lock = threading.Lock()

    def limits_for(self, tenant: TenantId) -> Limits:
        """The tenant's limits under the policy in force (a submit asks three times)."""
        if self._version is None:
            return self._limits_for(tenant)
        version = self._version()
        if self._resolved[0] != version:
            self._resolved = (version, {})
        known = self._resolved[1]
        limits = known.get(tenant)
        if limits is None:
            limits = known[tenant] = self._limits_for(tenant)
        return limits

    def _bucket(self, tenant: TenantId, limits: Limits, now: float) -> TokenBucket:
        return _sized(self._buckets, tenant, limits.submit_rate, limits.submit_burst, now)

    def admit_read(self, tenant: TenantId, call: str, cost: int) -> None:
        """Take `cost` of the tenant's read tokens for one `call`; QuotaExceededError when short."""
        limits = self.limits_for(tenant)
        with self._lock:
            now = self._monotonic()
            bucket = _sized(self._reads, tenant, limits.read_rate, limits.read_burst, now)
            if bucket.take(cost, now):
                return
            wait = (cost - bucket.level(now)) / limits.read_rate
        raise QuotaExceededError(
            tenant, "read_rate", limits.read_rate,
            f"{call} takes {cost} read token(s) (burst {limits.read_burst}, {limits.read_rate:g}/s): "
            f"retry in {max(wait, 0.001):.3f}s",
            retry_after_s=max(wait, 0.001) if cost <= limits.read_burst else None,
        )

    def check_spec_bytes(self, tenant: TenantId, size: int, field: str) -> None:
        limits = self.limits_for(tenant)
        if size > limits.max_spec_bytes:
            raise QuotaExceededError(
                tenant, "max_spec_bytes", limits.max_spec_bytes, f"{field} is {size} bytes encoded"
            )

    def check_spec(self, tenant: TenantId, spec: JobSpec, field: str) -> None:
        """Counts inside one spec: env entries, labels and command arguments."""
        limits = self.limits_for(tenant)
        for name, count, limit in (
            ("max_env", len(spec.env), limits.max_env),
            ("max_labels", len(spec.labels), limits.max_labels),
            ("max_argv", len(spec.command), limits.max_argv),
        ):
            if count > limit:
                raise QuotaExceededError(tenant, name, limit, f"{field} has {count}")

    def admit(self, tenant: TenantId, jobs: int, unfinished: int) -> None:
        """Room for `jobs` more (given `unfinished` already), then take their rate tokens."""
        limits = self.limits_for(tenant)
        if unfinished + jobs > limits.max_queued_jobs:
            raise QuotaExceededError(
                tenant,
                "max_queued_jobs",
                limits.max_queued_jobs,
                f"{unfinished} unfinished job(s) plus {jobs} new",
            )
        with self._lock:
            now = self._monotonic()
            bucket = self._bucket(tenant, limits, now)
            if not bucket.take(jobs, now):
                wait = (jobs - bucket.level(now)) / limits.submit_rate
                raise QuotaExceededError(
                    tenant,
                    "submit_rate",
                    limits.submit_rate,
                    f"{jobs} job(s) asked, {int(bucket.level(now))} may be submitted now "
                    f"(burst {limits.submit_burst}, {limits.submit_rate:g}/s)",
                    retry_after_s=max(wait, 0.001) if jobs <= limits.submit_burst else None,
                )

    @contextmanager
    def watch_stream(self, tenant: TenantId) -> Iterator[None]:
        """Hold one of the tenant's watch-stream slots while the body runs."""
        limit = self.limits_for(tenant).max_watch_streams
        with self._lock:
            open_now = self._watches.get(tenant, 0)
            if open_now >= limit:
                raise QuotaExceededError(
                    tenant, "max_watch_streams", limit, f"{open_now} stream(s) already open"
                )
            self._watches[tenant] = open_now + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._watches.get(tenant, 1) - 1
                if left > 0:
                    self._watches[tenant] = left
                else:
                    self._watches.pop(tenant, None)

    def usage(self, tenant: TenantId, unfinished: int) -> QuotaUsage:
        limits = self.limits_for(tenant)
        with self._lock:
            now = self._monotonic()
            tokens = self._bucket(tenant, limits, now).level(now)
            watches = self._watches.get(tenant, 0)
        return QuotaUsage(
            limits=limits, unfinished_jobs=unfinished, watch_streams=watches, submit_tokens=tokens
        )


def _sized(buckets: dict[TenantId, TokenBucket], tenant: TenantId, rate: float, burst: int,
           now: float) -> TokenBucket:
    """The tenant's bucket at this size: a policy change resizes it; tokens spent stay spent.

    The bucket learns of the change at the tenant's next call, not at the reload: the time since
    its last call refills at the faster of the two rates, so a raised rate applies at once (the
    old one, 0.01/s, had refused the first call after a reload to 100/s)."""
    bucket = buckets.get(tenant)
    if bucket is None or (bucket.rate, bucket.burst) != (rate, burst):
        fresh = TokenBucket(rate, burst, now)
        if bucket is not None:
            bucket.rate = max(bucket.rate, rate)
            bucket.burst = max(bucket.burst, burst)
            fresh._tokens = min(float(burst), bucket.level(now))
        bucket = buckets[tenant] = fresh
    return bucket


def tenant_limits(policy: Policy, tenant: str) -> Limits:
    """The tenant's limits under `policy`: the policy's `limits` with the tenant's own overrides."""
    declared = policy.tenant(tenant)
    return resolve_limits(policy.document.limits, declared.limits if declared else None)


def resolve_limits(defaults: Limits, override: LimitsOverride | None) -> Limits:
    """The policy's default limits with a tenant's overrides applied (unset ones inherited)."""
    changes = override.model_dump(exclude_none=True) if override is not None else {}
    return defaults.model_copy(update=changes) if changes else defaults
