"""Per-route (site) health for bursting: how busy and how failing each cloud site is."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from broker.model import Attempt, AttemptState, SiteId
from broker.policy import Policy


@dataclass(frozen=True)
class RouteState:
    provisioning: int = 0
    """Attempts at this site not yet running."""
    running: int = 0
    recent_attempts: int = 0
    """Attempts that ended within the failure-throttle window."""
    recent_failures: int = 0
    last_failure: datetime | None = None
    provisioning_p95_s: float | None = None
    """The p95 of the route's newest launches as observed (`broker.burst.provisioning`); None:
    too few yet. A burst's lead is the larger of it and the policy's `provisioning_p95`."""


def route_states(
    attempts: Iterable[Attempt], now: datetime, policy: Policy, learned: Mapping[str, float] | None = None
) -> dict[SiteId, RouteState]:
    """Summarise attempts per site for the throttle and the per-route limits, with each site's
    observed provisioning p95 (`learned`, `broker.burst.provisioning`)."""
    window = policy.burst.failure_throttle.window
    acc: dict[SiteId, RouteState] = {}
    for a in attempts:
        if a.broker_side:
            continue  # ended by the broker's own downtime: says nothing about the route
        s = acc.get(a.site, RouteState())
        if a.state == AttemptState.PENDING:
            s = replace(s, provisioning=s.provisioning + 1)
        elif a.state == AttemptState.RUNNING:
            s = replace(s, running=s.running + 1)
        elif now - a.updated_at <= window:
            s = replace(s, recent_attempts=s.recent_attempts + 1)
            # (an end its own job caused, `JOB_SIDE`, is no failure of the route)
            if a.state in (AttemptState.FAILED, AttemptState.LOST) and a.error and not a.job_side:
                last = a.updated_at if s.last_failure is None else max(s.last_failure, a.updated_at)
                s = replace(s, recent_failures=s.recent_failures + 1, last_failure=last)
        acc[a.site] = s
    for site, p95 in (learned or {}).items():
        acc[SiteId(site)] = replace(acc.get(SiteId(site), RouteState()), provisioning_p95_s=p95)
    return acc


def route_refusal(site: str, state: RouteState | None, policy: Policy, now: datetime) -> str | None:
    """Why a burst to `site` must not start now (per-route limits, failure throttle), or None."""
    if state is None:
        return None
    limits = policy.burst.sites.get(site)
    if limits is not None and state.provisioning >= limits.max_provisioning:
        return (
            f"{site} already has {state.provisioning} instance(s) provisioning "
            f"(limit {limits.max_provisioning})"
        )
    if (
        limits is not None
        and limits.max_instances is not None
        and state.provisioning + state.running >= limits.max_instances
    ):
        return f"{site} is at its limit of {limits.max_instances} instance(s)"
    throttle = policy.burst.failure_throttle
    if state.recent_attempts >= throttle.min_attempts:
        rate = state.recent_failures / state.recent_attempts
        cooling = state.last_failure is not None and now - state.last_failure < throttle.cooldown
        if rate > throttle.max_failure_rate and cooling:
            return (
                f"{site} is throttled: {state.recent_failures} of its last {state.recent_attempts} "
                f"attempts failed (limit {throttle.max_failure_rate:.0%})"
            )
    return None
