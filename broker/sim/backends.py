"""Simulated backends: on-prem partitions, cloud routes with stock-outs, and the money ledger.

None of this decides anything: it is the world the decisions act on, and it answers the
questions an adapter or the store would (free capacity, expected wait, route states, money).
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from broker.burst import RouteState, TenantMoney, is_onprem
from broker.burst.money import BEIJING, Charge, month_of, monthly_budget, settled_split, tenant_money
from broker.burst.provisioning import LaunchTimes
from broker.burst.snapshot import partition_key
from broker.model import Offer, SiteId
from broker.offline_images import static_no_images
from broker.placement import prepare_offers
from broker.placement.cost import Draws
from broker.policy import Policy
from broker.policy.offers import static_offers
from broker.sim.jobs import EPOCH
from broker.sim.scenario import Scenario


@dataclass
class Partition:
    """One on-prem partition as the scheduler sees it: pooled accelerators (or CPU cores)."""

    key: str
    total: int
    accelerated: bool
    free: int = 0
    ends: list[tuple[float, int]] = field(default_factory=list)
    """Heap of (expected end, units) of running jobs: the backend's view (the users' estimates)."""
    gone: dict[tuple[float, int], int] = field(default_factory=dict)
    """Entries of `ends` whose jobs finished before their expected end (dropped lazily)."""

    def start(self, units: int, end_s: float) -> None:
        self.free -= units
        heapq.heappush(self.ends, (end_s, units))

    def finish(self, now_s: float, units: int, end_s: float | None = None) -> None:
        """`units` free now; `end_s`: the end the job was expected at, if it is still to come."""
        self.free += units
        if end_s is not None and end_s > now_s + 1e-9:  # still in the heap: drop it when on top
            self.gone[(end_s, units)] = self.gone.get((end_s, units), 0) + 1
        while self.ends and (self.ends[0][0] <= now_s + 1e-9 or self.ends[0] in self.gone):
            top = heapq.heappop(self.ends)
            n = self.gone.pop(top, 0)
            if n > 1:
                self.gone[top] = n - 1

    def expected_wait_s(self, now_s: float) -> float:
        """The backend's estimate for a new one-unit job: 0 when free, else the next end."""
        if self.free > 0 or not self.ends:
            return 0.0
        return max(0.0, self.ends[0][0] - now_s)


def onprem_partitions(policy: Policy, onprem_gpus: int | None) -> dict[str, Partition]:
    """Capacity per partition from the policy (`onprem_gpus` rescales the GPU partitions)."""
    sizes: dict[str, tuple[int, bool, int]] = {}
    for site in policy.sites:
        for p in site.partitions:
            key = f"{site.id}/{p.name}"
            if p.accelerator is None:
                sizes[key] = (p.nodes * max(1, int(p.cpus_per_node)), False, 1)
            else:
                sizes[key] = (p.nodes * p.count_per_node, True, p.count_per_node)
    if onprem_gpus is not None:
        gpu = {k: (n, node) for k, (n, acc, node) in sizes.items() if acc and n}
        for key, n in rescaled(gpu, onprem_gpus).items():
            sizes[key] = (n, True, sizes[key][2])
    return {k: Partition(k, n, acc, free=n) for k, (n, acc, _) in sizes.items()}


def rescaled(parts: Mapping[str, tuple[int, int]], total: int) -> dict[str, int]:
    """`total` GPUs shared among partitions of (GPUs, GPUs per node) in proportion to their sizes,
    each keeping a node at least (the total is then more only when `total` is below those nodes);
    whole GPUs by largest remainder, so the shares add up to `total` exactly."""
    out: dict[str, int] = {}
    rest = dict(parts)
    while rest:
        left, size = total - sum(out.values()), sum(n for n, _ in rest.values())
        floored = {k: node for k, (n, node) in rest.items() if left * n / size < node}
        if not floored:
            break
        out.update(floored)  # too small for a node of its own share: one node, the rest share the remainder
        rest = {k: v for k, v in rest.items() if k not in floored}
    if rest:
        left, size = max(0, total - sum(out.values())), sum(n for n, _ in rest.values())
        exact = {k: left * n / size for k, (n, _) in rest.items()}
        share = {k: int(x) for k, x in exact.items()}
        by_remainder = sorted(exact, key=lambda k: (share[k] - exact[k], k))
        for k in by_remainder[: left - sum(share.values())]:
            share[k] += 1
        out.update(share)
    return out


class OfferBook:
    """The static offers, with the live on-prem overlay (free, expected wait) per pass."""

    def __init__(
        self,
        policy: Policy,
        parts: Mapping[str, Partition],
        provisioning_s: Mapping[str, float],
        prices: Mapping[str, tuple[float, str]] | None = None,
    ):
        self.policy = policy
        self.no_images = static_no_images(policy, unsure=False)
        """Sites that run no container image (a local site), as the live adapters say."""
        self.static = static_offers(policy, read_at=EPOCH)
        if prices:  # recorded prices (offer key -> price per hour, currency) replace the catalog's
            self.static = [
                o.model_copy(update={"price_per_hour": prices[o.key][0], "currency": prices[o.key][1]})
                if o.key in prices
                else o
                for o in self.static
            ]
        self.onprem_idx = [i for i, o in enumerate(self.static) if is_onprem(policy, o.site)]
        self.parts = parts
        self._cache: dict[tuple[int, int, int], Offer] = {}
        # Cloud offers carry their site's mean provisioning time as expected wait (as live adapters do).
        self.static = [
            o
            if is_onprem(policy, o.site) or not provisioning_s.get(o.site)
            else o.model_copy(update={"expected_wait_s": provisioning_s[o.site]})
            for o in self.static
        ]
        self.prepared = prepare_offers(self.static, policy)
        """The static offers prepared once for placement (its memo lives as long as the run)."""
        self.totals = {
            partition_key(self.static[i]): parts[partition_key(self.static[i])].total
            for i in self.onprem_idx
            if partition_key(self.static[i]) in parts
        }

    def capacity(self, now_s: float) -> dict[str, tuple[int, float]]:
        """The live on-prem overlay for `self.static`: partition key -> (free, expected wait)."""
        return {
            key: (part.free, float(round(part.expected_wait_s(now_s))))
            for key, part in self.parts.items()
            if key in self.totals
        }

    def offers(self, now_s: float) -> list[Offer]:
        out = list(self.static)
        for i in self.onprem_idx:
            o = out[i]
            part = self.parts.get(partition_key(o))
            if part is not None:
                state = (part.free, round(part.expected_wait_s(now_s)))
                got = self._cache.get((i, *state))
                if got is None:
                    if len(self._cache) > 50_000:
                        self._cache.clear()
                    got = self._cache[(i, *state)] = o.model_copy(
                        update={"free": state[0], "expected_wait_s": float(state[1])}
                    )
                out[i] = got
        return out


@dataclass
class Route:
    provisioning: int = 0
    running: int = 0
    ended: deque[tuple[float, bool]] = field(default_factory=deque)
    """(end time, failed) of recent attempts, oldest first."""
    failed: deque[float] = field(default_factory=deque)
    """The end times of the failed ones among `ended` (read every pass: not filtered out of it)."""
    quiet: tuple[tuple[int, int, int, float | None], RouteState] | None = None
    """The last state read with no failure in the window, by (provisioning, running, attempts,
    observed provisioning p95)."""
    launches: LaunchTimes = field(default_factory=LaunchTimes)
    """How long its launches took to come up, newest first (the broker times them live too)."""

    def up(self, took_s: float) -> None:
        """An instance came up `took_s` after its launch."""
        self.provisioning, self.running = self.provisioning - 1, self.running + 1
        self.launches.observe(took_s)


class Clouds:
    """Cloud sites: provisioning delays, stock-out episodes, spot interruptions, route states."""

    def __init__(self, policy: Policy, scenario: Scenario, horizon_s: float) -> None:
        self.policy = policy
        self.scenario = scenario
        self.sites = [s.id for s in policy.sites if not s.partitions]
        self.routes = {s: Route() for s in self.sites}
        self.window_s = policy.burst.failure_throttle.window.total_seconds()
        self.stockouts: dict[str, list[tuple[float, float]]] = {}
        for site in self.sites:
            so = scenario.stockouts_for(site)
            rng = random.Random(f"{scenario.seed}:stockouts:{site}")
            spans, t = [], 0.0
            while so.per_day > 0:
                t += rng.expovariate(so.per_day / 86400.0)
                if t > horizon_s:
                    break
                spans.append((t, t + rng.expovariate(1.0 / so.mean_duration_s)))
            self.stockouts[site] = spans

    def mean_provisioning_s(self) -> dict[str, float]:
        out = {}
        for s in self.sites:
            d = self.scenario.provisioning_for(s)
            out[s] = (d.min_s + d.mode_s + d.max_s) / 3
        return out

    def stocked_out(self, site: str, t: float) -> bool:
        return any(a <= t < b for a, b in self.stockouts.get(site, ()))

    def provisioning_delay(self, site: str, job: int, attempt: int) -> float:
        d = self.scenario.provisioning_for(site)
        rng = random.Random(f"{self.scenario.seed}:prov:{job}:{attempt}")
        lo, hi = min(d.min_s, d.max_s), max(d.min_s, d.max_s)
        return rng.triangular(lo, hi, min(max(d.mode_s, lo), hi)) if hi > lo else lo

    def interruption_after(self, offer: Offer, job: int, attempt: int) -> float:
        """Seconds of running until a spot interruption (inf for on-demand)."""
        if not offer.spot:
            return math.inf
        limits = self.policy.burst.sites.get(offer.site)
        rate = self.scenario.interruptions_for(offer.site, limits.spot_interruption_risk if limits else 0.05)
        if rate <= 0:
            return math.inf
        return random.Random(f"{self.scenario.seed}:spot:{job}:{attempt}").expovariate(rate / 3600.0)

    def end_attempt(self, site: str, t: float, failed: bool) -> None:
        r = self.routes[site]
        r.ended.append((t, failed))
        if failed:
            r.failed.append(t)

    def states(self, t: float, now: datetime) -> dict[SiteId, RouteState]:
        out: dict[SiteId, RouteState] = {}
        for site, r in self.routes.items():
            ended, fails = r.ended, r.failed
            while ended and ended[0][0] < t - self.window_s:
                ended.popleft()
            while fails and fails[0] < t - self.window_s:
                fails.popleft()
            if fails:
                last = now + timedelta(seconds=fails[-1] - t)
                state = _route(r, len(ended), len(fails), last)
            else:  # no failure in the window: the state does not depend on the time, keep it
                key = (r.provisioning, r.running, len(ended), r.launches.p95_s())
                if r.quiet is None or r.quiet[0] != key:
                    r.quiet = (key, _route(r, len(ended), 0, None))
                state = r.quiet[1]
            out[SiteId(site)] = state
        return out


def _route(r: Route, attempts: int, failures: int, last: datetime | None) -> RouteState:
    return RouteState(
        provisioning=r.provisioning,
        running=r.running,
        recent_attempts=attempts,
        recent_failures=failures,
        last_failure=last,
        provisioning_p95_s=r.launches.p95_s(),
    )


def month_span(now: datetime) -> tuple[datetime, datetime, str]:
    """The budget month of `now` (`month_of`) with its first instant and the next month's."""
    local = now.astimezone(BEIJING)
    start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end, month_of(now)


MAX_BACKOFF_S = 7200.0
"""A waiting job's back-off timer stops doubling here (except `backoff_cap_s`'s money-bound jobs)."""


def backoff_cap_s(now_s: float, money_bound: bool, epoch: datetime = EPOCH) -> float:
    """How far a waiting job's back-off may reach from simulated second `now_s`: `MAX_BACKOFF_S`, or,
    for a job only a spent budget holds back, to the next budget month's first second (money freed
    by a settlement re-decides the cloud waiters on its own)."""
    if not money_bound:
        return MAX_BACKOFF_S
    now = epoch + timedelta(seconds=now_s)
    return (month_span(now)[1] - now).total_seconds() + 1.0


class Ledger:
    """Cloud spend per tenant and month (reserved at launch, settled at the end), like the store.

    Cash counts per month; a voucher's draws count over every month (its balance is spent once)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.cash: dict[tuple[str, str], float] = {}
        self.voucher: dict[tuple[str, str, str], float] = {}
        self._money: dict[tuple[str, str, object], TenantMoney] = {}
        """(tenant, month, day) -> what it has left, until the next `add` (most passes add nothing);
        the day only where a voucher expires (its balance is gone from the day after)."""
        self._expiring = any(v.expires for t in policy.document.tenants for v in t.vouchers)
        self._month: tuple[datetime, datetime, str] | None = None
        """The budget month last asked about and its span [start, end) (a pass asks once per job it
        decides; a month's instants need no time-zone conversion and `strftime` each)."""

    def budget(self, tenant: str) -> float | None:
        return monthly_budget(self.policy, tenant)

    def money(self, tenant: str, now: datetime) -> TenantMoney:
        """What the tenant has left: the live broker's arithmetic (`tenant_money`) on this book."""
        span = self._month
        if span is None or not span[0] <= now < span[1]:
            span = self._month = month_span(now)
        month = span[2]
        key = (tenant, month, now.astimezone(BEIJING).date() if self._expiring else None)
        got = self._money.get(key)
        if got is None:
            charges = [Charge(t, v) for (t, m), v in self.cash.items() if m == month]
            used = self.voucher_used(tenant)
            got = self._money[key] = tenant_money(self.policy, tenant, charges, used, now)
        return got

    def voucher_used(self, tenant: str) -> dict[str, float]:
        """What the tenant drew from each voucher in every month (the store's `voucher_used`)."""
        used: dict[str, float] = {}
        for (t, _, vid), v in self.voucher.items():
            if t == tenant:
                used[vid] = used.get(vid, 0.0) + v
        return used

    def add(self, tenant: str, month: str, cash: float, draws: Draws) -> None:
        """Book `cash` in the tenant's month and what each voucher pays (`draws`, changes of either)."""
        self._money.clear()
        self.cash[(tenant, month)] = self.cash.get((tenant, month), 0.0) + cash
        for vid, paid in draws:
            if paid:
                k = (tenant, month, vid)
                self.voucher[k] = self.voucher.get(k, 0.0) + paid

    def settle(
        self,
        tenant: str,
        site: str,
        reserved: tuple[float, float, Draws, str],
        total: float,
        run: tuple[datetime, datetime],
    ) -> tuple[float, float]:
        """Replace a reservation (cash, voucher, draws, month) of a run at `site` by the attempt's
        `total` cost over `run`, split as the live settle splits it (`settled_split`); returns
        the (cash, voucher) paid."""
        cash, _, own, month = reserved
        # The vouchers pay their discount of the actual cost, up to what the tenant's other attempts
        # left of each: a run past its estimate may exhaust one, never overdraw it.
        others = self.voucher_used(tenant)
        for vid, paid in own:
            others[vid] = others.get(vid, 0.0) - paid
        paid_cash, draws = settled_split(self.policy, tenant, site, total, others, run)
        now, was = dict(draws), dict(own)
        change = tuple((vid, now.get(vid, 0.0) - was.get(vid, 0.0)) for vid in {**was, **now})
        self.add(tenant, month, paid_cash - cash, change)
        return paid_cash, sum(now.values())

    def violations(self) -> int:
        """Tenant-months whose cash exceeds the budget, plus months over the global cap."""
        n = sum(1 for (t, _), v in self.cash.items() if (b := self.budget(t)) is not None and v > b + 1e-6)
        cap = self.policy.burst.budget.global_monthly_cap
        if cap is not None:
            months: dict[str, float] = {}
            for (_, m), v in self.cash.items():
                months[m] = months.get(m, 0.0) + v
            n += sum(1 for v in months.values() if v > cap + 1e-6)
        return n
