"""The cloud side of a burst decision: which cloud offer a job may burst to now, and at what cost."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from broker.burst.inputs import BurstInputs
from broker.burst.money import (
    CostSplit,
    TenantMoney,
    cash_by_month,
    cents_up,
    estimate_cost,
    monthly_budget,
    split_cost,
)
from broker.burst.routes import route_refusal
from broker.burst.spot import offer_outlook, restarts_text, spot_refusal
from broker.durations import format_duration
from broker.model import JobSpec, Offer, SiteId, SpotMode, TenantId
from broker.placement import ScoredOffer
from broker.placement.cost import draw_vouchers, usable_vouchers
from broker.placement.scored import Scored
from broker.policy import Policy
from broker.policy.schema import Voucher as PolicyVoucher


@dataclass(frozen=True, slots=True)
class CloudPick:
    """The cloud offer a job would burst to: its total score (spot risk included) and money."""

    total: float
    scored: ScoredOffer
    cash: float
    voucher: float
    skipped: tuple[tuple[str, str], ...] = ()
    """(offer key, why) of each offer ranked before this one, refused (route, stock, spot, money)."""
    later: Callable[[], list[tuple[str, str]]] | None = field(default=None, compare=False, repr=False)
    """Those ranked after it by their spot risk though scored better (made when read)."""

    @property
    def passed_over(self) -> tuple[tuple[str, str], ...]:
        """(offer key, why) of each offer scored better than this one and not taken, in rank order."""
        return self.skipped if self.later is None else (*self.skipped, *self.later())


Covering = tuple[Sequence[tuple[PolicyVoucher, float]], tuple[datetime, datetime] | None]
"""A site's `usable_vouchers` (with balances, in paying order) and the run they pay for (None: all)."""


def spot_risk_cost(spec: JobSpec, scored: ScoredOffer, policy: Policy, covering: Covering | None) -> float:
    """Expected extra cost of running on spot: the billed hours lost to interruptions
    (`broker.burst.spot`: restarts from the last checkpoint, or from zero), less what the
    tenant's vouchers covering the site pay of them."""
    if not scored.offer.spot:
        return 0.0
    runtime_h = spec.runtime_estimate.total_seconds() / 3600
    out = offer_outlook(spec, scored.offer, policy, runtime_h)
    if math.isinf(out.billed_h):
        return math.inf
    return paid_risk(scored.terms.get("cost", 0.0), out.billed_h / runtime_h - 1.0, covering)


def paid_risk(cost: float, factor: float, covering: Covering | None) -> float:
    """What `factor` × `cost` of lost hours adds to the tenant's bill: what the vouchers draw of the
    expected billed cost (`draw_vouchers`, the split the reservation makes: one after another, each
    within its balance and up to its expiry) against what they draw of `cost` (the placement's
    `voucher` term), so voucher-covered spot is priced as it is paid."""
    extra = cost * factor
    if covering is None or not covering[0]:
        return extra
    usable, run = covering
    billed = sum(paid for _, paid in draw_vouchers(usable, cost + extra, run))
    return extra - (billed - sum(paid for _, paid in draw_vouchers(usable, cost, run)))


MONEY_REFUSALS = ("budget:", "global burst cap:")  # how an offer refused by money alone is said to be
PASSED_OVER_SHOWN = 3  # better-scored offers a burst's reasons name (`passed_over` keeps all)


def passed_over_reasons(passed_over: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    """'passed over KEY: why' for the first better-scored offers a burst did not take."""
    shown = passed_over[:PASSED_OVER_SHOWN]
    return tuple(f"passed over {key}: {why.removeprefix(f'{key}: ')}" for key, why in shown)


_Row = tuple[float, int, ScoredOffer]


class CloudOrder:
    """Cloud offers as (total, input index, offer), best-first, the `ScoredOffer`s built only as
    they are read (a burst decision walks a few of them; the same objects on every read).
    `rows` are (total, position in `slots`) per cloud offer, best-first; `slots` in tie order;
    `scores` the placement scores by input index (spot risk left out)."""

    __slots__ = ("_allowed", "rows", "scores", "slots")

    def __init__(
        self,
        allowed: Sequence[ScoredOffer],
        rows: list[tuple[float, int]],
        slots: list[_Slot],
        scores: Sequence[float],
    ) -> None:
        self._allowed, self.rows, self.slots, self.scores = allowed, rows, slots, scores

    def at(self, i: int) -> ScoredOffer:
        """The allowed offer at input index `i`."""
        return self._allowed.at(i) if isinstance(self._allowed, Scored) else self._allowed[i]

    def __iter__(self) -> Iterator[_Row]:
        at = self._allowed.at if isinstance(self._allowed, Scored) else self._allowed.__getitem__
        slots = self.slots
        for total, r in self.rows:
            i = slots[r][0]
            yield total, i, at(i)


# The allowed list, its order, the largest spot bill, the voucher balances and the run it was made with.
_Memo = tuple[Sequence[ScoredOffer], CloudOrder, float, tuple[float, ...], tuple[datetime, datetime] | None]
_ORDERS: dict[tuple[int, object, object], _Memo] = {}


def cloud_order(
    spec: JobSpec,
    allowed: Sequence[ScoredOffer],
    home: frozenset[str],
    policy: Policy,
    tenant: str,
    balances: Mapping[str, float] | None = None,
    now: datetime | None = None,
) -> CloudOrder:
    """Cloud offers as (total, input index, offer), best-first by score plus spot risk (as the
    tenant pays it: `balances` are its vouchers' remaining balances, None: the policy's; a voucher
    pays for the part of a run started `now` before it expires, None: all of it).

    Memoized on the allowed list's identity (placement hands out the same list for the same
    job shape, runtime and vouchers), so re-deciding a waiting job does not re-sort its offers;
    a voucher balance that moved is a miss unless both balances cover every spot risk's bill.
    """
    key = (id(allowed), spec.runtime_estimate, spec.checkpoint)
    owner = policy.tenant(tenant)
    vouchers = owner.vouchers if owner is not None else ()
    held = tuple(v.balance if balances is None else balances.get(v.id, v.balance) for v in vouchers)
    run = None if now is None else (now, now + spec.runtime_estimate)
    when = run if any(v.expires for v in vouchers) else None  # (the split reads the run only then)
    hit = _ORDERS.get(key)
    if hit is not None and hit[0] is allowed and hit[4] == when and _same_bills(hit[3], held, hit[2]):
        return hit[1]
    if isinstance(allowed, Scored):  # from the placement's floats, no `ScoredOffer` built
        offers, scores, costs = allowed.floats()
        slots = _layout(offers, home)[0]
    else:
        slots = _slots([s.offer for s in allowed], home)
        scores, costs = [s.score for s in allowed], [s.terms.get("cost", 0.0) for s in allowed]
    rows, need = _ranked(
        spec, slots, scores, costs, policy, lambda site: (usable_vouchers(owner, site, balances), when)
    )
    order = CloudOrder(allowed, rows, slots, scores)
    if len(_ORDERS) > 4096:
        _ORDERS.clear()
    _ORDERS[key] = (allowed, order, need, held, when)
    return order


def burst_cost(spec: JobSpec, offer: Offer, policy: Policy) -> float:
    """What a burst reserves against the budget: the estimate's cost, spot at its expected
    billed hours (the policy and the simulator's baselines alike)."""
    hours = offer_outlook(spec, offer, policy).billed_h if offer.spot else None
    return estimate_cost(spec, offer, policy, hours)


def _same_bills(was: tuple[float, ...], now: tuple[float, ...], need: float) -> bool:
    """Voucher balances `was` and `now` split every spot bill up to `need` alike."""
    return was == now or all(a == b or (a >= need and b >= need) for a, b in zip(was, now, strict=True))


def _factor(spec: JobSpec, offer: Offer, policy: Policy, runtime_h: float) -> float | None:
    """A spot site's billed/runtime - 1 for this job (None: it never completes there)."""
    billed = offer_outlook(spec, offer, policy, runtime_h).billed_h
    return None if math.isinf(billed) else billed / runtime_h - 1.0


_Slot = tuple[int, str, str, Offer | None]
_Layout = tuple[list[_Slot], list[int]]
_LAYOUTS: dict[tuple[int, frozenset[str]], tuple[list[Offer], _Layout]] = {}


def _slots(offers: Sequence[Offer], home: frozenset[str]) -> list[_Slot]:
    """Each cloud offer's (index, site, key, itself if spot), in tie order: site, key, index."""
    slots: list[_Slot] = [
        (i, o.site, o.key, o if o.spot else None) for i, o in enumerate(offers) if o.site not in home
    ]
    slots.sort(key=lambda s: (s[1], s[2], s[0]))
    return slots


def _layout(offers: list[Offer], home: frozenset[str]) -> _Layout:
    """`_slots` and each on-prem offer's index (input order): kept per offer list (placement
    keeps one list per job shape, so a decision neither walks every offer for its on-prem ones
    nor formats the cloud's keys again)."""
    key = (id(offers), home)
    hit = _LAYOUTS.get(key)
    if hit is not None and hit[0] is offers:
        return hit[1]
    layout = (_slots(offers, home), [i for i, o in enumerate(offers) if o.site in home])
    if len(_LAYOUTS) > 4096:
        _LAYOUTS.clear()
    _LAYOUTS[key] = (offers, layout)
    return layout


def _ranked(
    spec: JobSpec,
    slots: list[_Slot],
    scores: Sequence[float],
    costs: Sequence[float],
    policy: Policy,
    covering: Callable[[str], Covering],
) -> tuple[list[tuple[float, int]], float]:
    """(total, position in `slots`) per cloud offer, sorted: `slots` are in tie order, so this is the
    order on (total, site, key, index). A spot offer's risk is `spot_risk_cost`'s float: the outlook
    and the voucher depend only on the site for one job, so they are looked up once per site.
    Also the largest expected spot bill (cost + risk before vouchers), for the memo."""
    runtime_h = spec.runtime_estimate.total_seconds() / 3600
    factors: dict[str, tuple[float | None, Covering]] = {}  # site -> billed/runtime - 1, its vouchers
    rows: list[tuple[float, int]] = []
    need = 0.0
    for r, (i, site, _, spot) in enumerate(slots):
        risk = 0.0
        if spot is not None:
            got = factors.get(site)
            if got is None:
                got = factors[site] = (_factor(spec, spot, policy, runtime_h), covering(site))
            f, vouchers = got
            if f is None:
                risk = math.inf
            else:
                risk = paid_risk(costs[i], f, vouchers)
                need = bill if (bill := costs[i] * (1.0 + f)) > need else need  # (max, with no call)
        rows.append((scores[i] + risk, r))
    rows.sort()
    return rows, need


def _slack_h(spec: JobSpec, inputs: BurstInputs) -> float | None:
    """Hours to the job's deadline (None: it has none)."""
    return None if spec.deadline is None else (spec.deadline - inputs.now).total_seconds() / 3600


def _riskier(
    spec: JobSpec, policy: Policy, inputs: BurstInputs, order: CloudOrder, k: int
) -> list[tuple[str, str]]:
    """(key, why) of the spot offers ranked after the pick at row `k` though scored better than it:
    over the spot limits, or dearer once their expected interruptions are priced."""
    rows, slots, scores = order.rows, order.slots, order.scores
    best = scores[slots[rows[k][1]][0]]
    out: list[tuple[str, str]] = []
    for j in range(k + 1, len(rows)):
        r = rows[j][1]
        i, _, key, spot = slots[r]
        if spot is None or scores[i] >= best - 1e-9:
            continue
        why = spot_refusal(spec, spot, policy, slack_h=_slack_h(spec, inputs), ratio=inputs.runtime_ratio)
        out.append((key, why or dearer_on_spot(spec, spot, policy)))
    return out


def dearer_on_spot(spec: JobSpec, offer: Offer, policy: Policy) -> str:
    """Why a spot offer within the spot limits ranked after the pick: its expected billed hours."""
    out = offer_outlook(spec, offer, policy)
    every = "none" if spec.checkpoint is None else format_duration(spec.checkpoint.interval)
    runtime_h = spec.runtime_estimate.total_seconds() / 3600
    return (
        f"{offer.key}: spot expects {restarts_text(out.restarts)} restarts (checkpoint: {every}): "
        f"{out.billed_h:,.1f} billed h for {runtime_h:,.1f} h of work cost more than the decision's offer"
    )


def onprem_offers(allowed: Sequence[ScoredOffer], home: frozenset[str]) -> list[ScoredOffer]:
    """The allowed on-prem offers, in input order. Not kept per allowed list: holding thousands of
    placements alive costs the collector more than walking ~70 offers again saves."""
    if isinstance(allowed, Scored):  # builds only the on-prem offers' ScoredOffers
        at = allowed.at
        return [at(i) for i in _layout(allowed.offers(), home)[1]]
    return [s for s in allowed if s.offer.site in home]


def cloud_refusal(
    s: ScoredOffer,
    spec: JobSpec,
    tenant: TenantId,
    policy: Policy,
    inputs: BurstInputs,
    slack_spot_ok: bool,
) -> str | tuple[float, float]:
    """Why a cloud offer cannot be used now, or the (cash, voucher) it would take."""
    if s.offer.free is not None and s.offer.free <= 0:
        return f"{s.offer.key}: no stock"
    if s.offer.spot:
        # The slack rule steers a job that may run on-demand; the restart limit and the
        # expected completion hold for every spot run, `spot: required` included.
        if not slack_spot_ok and spec.spot != SpotMode.REQUIRED:
            return f"{s.offer.key}: deadline too close for spot"
        slack_h, ratio = _slack_h(spec, inputs), inputs.runtime_ratio
        why_spot = spot_refusal(spec, s.offer, policy, slack_h=slack_h, ratio=ratio)
        if why_spot is not None:
            return why_spot
    why = route_refusal(s.offer.site, inputs.routes.get(SiteId(s.offer.site)), policy, inputs.now)
    if why is not None:
        return why
    split = money_refusal(spec, s.offer, tenant, policy, inputs.money, inputs.now)
    return split if isinstance(split, str) else (cents_up(split.cash), split.voucher)


def money_refusal(
    spec: JobSpec, offer: Offer, tenant: str, policy: Policy, money: TenantMoney,
    now: datetime | None = None,
) -> str | CostSplit:
    """Why the tenant's budget or the global cap refuses a burst on `offer`, or how its bill
    splits; reserved as `burst_cost` prices it, the cash in whole cents rounded up (many bursts
    under half a cent each would reserve 0). The policy's decision and the baselines alike.
    Decided `now`, a voucher pays only for the estimated run's part before it expires."""
    run = None if now is None else (now, now + spec.runtime_estimate)
    cost = burst_cost(spec, offer, policy)
    split = split_cost(tenant, offer.site, cost, policy, money.voucher_balances, run)
    cash = cents_up(split.cash)
    if cash <= 0:  # (a voucher pays it all: no limit broken, even a month overrun by settlements)
        return split
    parts = [("", cash)] if money.ahead is None or run is None else cash_by_month(cash, run)
    untouched = (monthly_budget(policy, tenant), policy.burst.budget.global_monthly_cap)
    for i, (month, part) in enumerate(parts):  # this month's money, then those its run reaches
        left = (money.budget_left, money.global_left) if i == 0 else (money.ahead or {}).get(month, untouched)
        when = (",", "this month") if i == 0 else (f" in {month}, where its run goes on,", "then")
        if left[0] is not None and part > left[0] + 1e-9:
            where = f"{when[0]} {max(0.0, left[0]):.2f} left {when[1]}"
            return f"{MONEY_REFUSALS[0]} {offer.key} would cost {part:.2f} {policy.currency} in cash{where}"
        if left[1] is not None and part > left[1] + 1e-9:
            # No figures: the reason reaches the tenant's own job message, and what is left of the
            # cap would tell every tenant's spend (operators see it in `szb status` / `szb spend`).
            return f"{MONEY_REFUSALS[1]} reached for {offer.key} {'this month' if i == 0 else 'in ' + month}"
    return split


def best_cloud(
    spec: JobSpec,
    tenant: TenantId,
    allowed: Sequence[ScoredOffer],
    policy: Policy,
    inputs: BurstInputs,
    home: frozenset[str],
) -> CloudPick | list[str]:
    """The best usable cloud offer within route limits and money, or every refusal when none is.

    A site whose route refuses refuses each of its offers whatever else they fail: they are
    passed over, and their reasons (`cloud_refusal`'s) made only when no offer is usable."""
    slack_spot_ok = True
    if spec.deadline is not None:
        runtime_s = spec.runtime_estimate.total_seconds()
        slack = (spec.deadline - inputs.now).total_seconds() - runtime_s
        slack_spot_ok = slack >= runtime_s * (policy.burst.deadline_slack_factor - 1)
    order = cloud_order(spec, allowed, home, policy, tenant, inputs.money.voucher_balances, inputs.now)
    shut: dict[str, str | None] = {}
    passed: list[int] = []
    refused: list[tuple[int, str]] = []
    skipped: list[tuple[int, str]] = []  # (row, why) of the rows before a pick, in rank order
    slots = order.slots
    for k, (total, r) in enumerate(order.rows):
        i, site = slots[r][0], slots[r][1]
        if site not in shut:
            shut[site] = route_refusal(site, inputs.routes.get(SiteId(site)), policy, inputs.now)
        why_route = shut[site]
        if why_route is not None:
            passed.append(i)
            skipped.append((k, why_route))
            continue
        s = order.at(i)
        why = cloud_refusal(s, spec, tenant, policy, inputs, slack_spot_ok)
        if isinstance(why, str):
            refused.append((i, why))
            skipped.append((k, why))
            continue
        before = tuple((slots[order.rows[j][1]][2], w) for j, w in skipped)
        return CloudPick(total, s, why[0], why[1], before, partial(_riskier, spec, policy, inputs, order, k))
    for i in passed:
        why = cloud_refusal(order.at(i), spec, tenant, policy, inputs, slack_spot_ok)
        assert isinstance(why, str)  # its route refuses it
        refused.append((i, why))
    return [why for _, why in sorted(refused)]  # in the offers' own order


def money_refused(refusals: Sequence[str]) -> bool:
    """Whether money (the tenant's monthly budget or the global cap) refused one or more of the
    cloud offers (`best_cloud`'s refusals): money freed, by a settlement under its reservation or
    the next budget month, may then let the job burst. Money is the last check an offer meets."""
    return any(why.startswith(MONEY_REFUSALS) for why in refusals)
