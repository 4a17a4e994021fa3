"""Reclaim's waste budget: a token bucket of lost work per partition. Pure; time is injected.

The bucket holds at most `capacity` unit-seconds (`max_capacity_share` of the partition over
`window`) and refills at `rate` (`max_capacity_share` x the partition's units, per second).
A preemption goes when the bucket holds at least the work it would lose, or is full, and its
whole loss is charged, so a loss larger than the bucket puts it into debt and the next
preemption waits until that is repaid. The rate limits waste, never whether a quota comes
back: a full bucket lets any preemption go, and a bucket refills from any debt in at most
(capacity + that loss) / rate seconds. Over any span of T seconds the work charged is at most
rate x T plus the larger of capacity and the largest single loss.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Bucket:
    """One partition's budget: `level` unit-seconds at time `at` (epoch seconds); may be negative."""

    capacity: float
    rate: float
    level: float
    at: float

    @classmethod
    def full(cls, capacity: float, rate: float, at: float) -> Bucket:
        """A bucket that has not been charged yet."""
        return cls(capacity, rate, capacity, at)

    def resized(self, capacity: float, rate: float) -> Bucket:
        """The same bucket under a reloaded policy: what it holds, capped at the new capacity."""
        return Bucket(capacity, rate, min(self.level, capacity), self.at)

    def level_at(self, t: float) -> float:
        """What the bucket holds at `t`: refilled since `at`, never beyond its capacity."""
        return min(self.capacity, self.level + self.rate * max(0.0, t - self.at))

    def allows(self, loss: float, t: float) -> bool:
        """Whether a preemption losing `loss` unit-seconds may go at `t`."""
        level = self.level_at(t)
        return level >= self.capacity or level >= loss

    def charge(self, loss: float, t: float) -> Bucket:
        """The bucket after a preemption at `t` that loses `loss` (its whole loss, into debt if so)."""
        return Bucket(self.capacity, self.rate, self.level_at(t) - loss, t)

    def wait_s(self, loss: float, t: float, growth: float = 0.0) -> float:
        """Seconds from `t` until a preemption losing `loss` now (and `growth` more per second
        while it waits: work that does not checkpoint) may go; 0 when it may now."""
        level = self.level_at(t)
        if self.allows(loss, t):
            return 0.0
        if self.rate <= 0:
            return float("inf")
        until_full = (self.capacity - level) / self.rate
        if self.rate > growth:
            return min(until_full, (loss - level) / (self.rate - growth))
        return until_full
