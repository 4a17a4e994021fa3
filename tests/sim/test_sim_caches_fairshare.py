"""The simulator's fair-share shortcuts answer exactly as the plain computations (issue 15, speed):
the tenants' states summed term by term with their quota units copied once per book version,
the holds' share ratios kept per (time, version, tenants asked), and each waiting job's
fair-share view kept per candidate set (the same floats and objects' values, not timings)."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from broker.fairshare.book import FairShareBook, Holding, capacity_of
from broker.fairshare.holds import Hold, Holds, claimed_meanwhile
from broker.fairshare.order import _PRIORITY_RANK as PRIORITY_RANK
from broker.fairshare.order import QueuedWork, Standing, TenantState, dominant, order, share_ratios, standings
from broker.fairshare.order import _key as _order_key
from broker.fairshare.shares import onprem_partitions, resolve_share
from broker.fairshare.usage import ZERO, Demand
from broker.policy import Policy, load_policy
from broker.sim.fairbook import IncrementalBook
from broker.sim.jobs import EPOCH, build_jobs
from broker.sim.scenario import load_scenario
from broker.sim.state import SimState, queued_work, take_heads
from broker.sim.synthetic import SyntheticParams, generate

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _plain_states(book: IncrementalBook, policy: Policy, now: datetime) -> dict[str, TenantState]:
    """The states as first written: per resource, (held + history + running so far) / 2."""
    t = now.timestamp()
    h = book.ledger.half_life_s
    past = book.ledger.history(now)
    decay = 2 ** (-(t - book._origin) / h) if h > 0 else 0.0
    used: dict[str, Demand] = {}
    for tenant in {*past, *(k for k, v in book._held.items() if any(v))}:
        a = book._held.get(tenant, [0.0, 0.0, 0.0])
        if h <= 0:
            used[tenant] = Demand(*a)
            continue
        w = book._weighted.get(tenant, [0.0, 0.0, 0.0])
        p = past.get(tenant, ZERO)
        run = [max(0.0, a[i] - decay * w[i]) for i in range(3)]
        hist = (p.accelerators * 1.0, p.cpus * 1.0, p.memory_gb * 1.0)
        used[tenant] = Demand(*((a[i] + hist[i] + run[i]) * 0.5 for i in range(3)))
    names = {*used, *(x.id for x in policy.tenants)}
    return {
        x: TenantState(resolve_share(policy, x), used.get(x, ZERO), dict(book._in_use.get(x, {})))
        for x in names
    }


def test_states_and_held_capacity_equal_the_plain_computation() -> None:
    policy = load_policy(CONFIGS / "policy-sim.yaml")
    tenants = [t.id for t in policy.tenants]
    rng = random.Random(11)
    book, holds = IncrementalBook(3 * 3600.0), Holds()
    running: list[str] = []
    t, checked, blocked = 0.0, 0, 0
    for n in range(1500):
        t += rng.choice([0.0, 0.0, rng.expovariate(1 / 600)])  # several reads at one instant
        now = EPOCH + timedelta(seconds=t)
        if running and rng.random() < 0.4:
            book.ended(running.pop(rng.randrange(len(running))), now)
        elif rng.random() < 0.6:
            gpus = rng.choice([1, 2, 8])
            part = rng.choice(["shangzhuang-onprem/ascend", "shangzhuang-onprem/a800"])
            book.started(
                str(n), Holding(rng.choice(tenants), part, Demand(gpus, 8.0 * gpus, 64.0), gpus, now)
            )
            running.append(str(n))
        if rng.random() < 0.2:
            part = rng.choice(["shangzhuang-onprem/ascend", "shangzhuang-onprem/a800"])
            hold = Hold(str(rng.randrange(n + 1)), rng.choice(tenants), rng.randint(1, 8), rng.random() < 0.3)
            holds.put(part, hold if rng.random() < 0.8 else None)
        if rng.random() < 0.3:
            fast = book.tenant_states(policy, now, {"someone-new"})
            plain = _plain_states(book, policy, now) | {"someone-new": fast["someone-new"]}
            assert fast == plain
            checked += 1
        for _ in range(2):  # a pass asks for each job it decides: the kept ratios answer the second
            job, tenant = str(rng.randrange(n + 1)), rng.choice(tenants)
            got = book.held_for(holds, policy, now, job, tenant)
            assert got == FairShareBook.held_for(book, holds, policy, now, job, tenant)
            blocked += bool(got)
    assert checked > 300 and blocked > 100  # states read often, holds in force often


def test_a_waiting_jobs_fair_share_view_is_kept_per_candidate_set() -> None:
    policy = load_policy(CONFIGS / "policy-sim.yaml")
    scenario = load_scenario(CONFIGS / "scenarios/flood.yaml")
    jobs = build_jobs(generate(SyntheticParams(jobs=50), scenario.seed), policy, scenario)
    for job in jobs:
        st = SimState.of(job)
        first = st.fair_work(job, ("a/x",))
        assert first == queued_work(job, ("a/x",)) and st.fair_work(job, ("a/x",)) is first
        other = st.fair_work(job, ("a/x", "a/y"))
        assert other == queued_work(job, ("a/x", "a/y")) and other is not first


def test_the_ledgers_money_with_its_month_kept_per_instant_equals_a_fresh_ledger() -> None:
    from broker.burst.money import month_of
    from broker.sim.backends import Ledger

    policy = load_policy(CONFIGS / "policy-sim.yaml")
    tenants = [t.id for t in policy.tenants]
    rng = random.Random(2)
    ledger = Ledger(policy)
    # An hour before a month ends in Beijing time, so the instants cross into the next month.
    t = datetime(2026, 3, 31, 23, 0, tzinfo=EPOCH.tzinfo)
    for _ in range(400):
        t += timedelta(seconds=rng.choice([0, 0, 20, 45]))
        tenant = rng.choice(tenants)
        if rng.random() < 0.3:
            ledger.add(tenant, month_of(t), rng.uniform(0, 900), ())
        fresh = Ledger(policy)
        fresh.cash, fresh.voucher = dict(ledger.cash), dict(ledger.voucher)
        assert ledger.money(tenant, t) == fresh.money(tenant, t)
    assert {m for _, m in ledger.cash} == {"2026-03", "2026-04"}  # both months were spent in
    assert any(ledger.money(x, t).budget_left is not None for x in tenants)  # a budget is read


def test_a_budget_months_span_holds_exactly_the_instants_of_that_month() -> None:
    from broker.burst.money import month_of
    from broker.sim.backends import month_span

    rng = random.Random(4)
    base = datetime(2027, 12, 31, 15, 59, 59, tzinfo=UTC)  # 23:59:59 in Beijing
    for _ in range(300):
        now = base + timedelta(days=rng.choice([0, 31, 59, 60, 400]), seconds=rng.uniform(-3, 3))
        start, end, month = month_span(now)
        assert month == month_of(now) == month_of(start) == month_of(end - timedelta(microseconds=1))
        assert start <= now < end and month_of(end) != month
        assert month_of(start - timedelta(microseconds=1)) != month


def test_units_held_count_as_claimed_only_while_one_job_is_decided() -> None:
    """`claimed_meanwhile` (a plain context, not a generator's; none at all when nothing is held)
    adds the held units to the pass's claims for the decision and takes them off after it, also
    when the decision raises."""
    rng = random.Random(4)
    for _ in range(200):
        claimed = {p: rng.randint(0, 4) for p in rng.sample("abcd", rng.randint(0, 3))}
        held = {p: rng.randint(1, 8) for p in rng.sample("abcde", rng.randint(0, 2))}
        before = dict(claimed)
        during = {p: before.get(p, 0) + held.get(p, 0) for p in {*before, *held}}
        with claimed_meanwhile(claimed, held):
            assert all(claimed.get(p, 0) == n for p, n in during.items())
        assert {p: n for p, n in claimed.items() if n or p in before} == before
        try:
            with claimed_meanwhile(claimed, held):
                raise KeyError("the decision failed")
        except KeyError:
            pass
        assert {p: n for p, n in claimed.items() if n or p in before} == before


def _plain_order(
    work: Sequence[QueuedWork],
    tenants: Mapping[str, TenantState],
    capacity: Demand,
    *,
    charge: float = 1.0,
) -> list[Standing]:
    """`order` as first written: every standing built, in a list."""
    by_tenant: dict[str, list[QueuedWork]] = {}
    for w in work:
        by_tenant.setdefault(w.tenant, []).append(w)
    states = {t: tenants.get(t, TenantState()) for t in by_tenant}
    active = set(by_tenant) | {t for t, s in tenants.items() if dominant(s.usage, capacity) > 0}
    ratios = share_ratios({**tenants, **states}, active, capacity)

    tiers: tuple[dict[str, list[QueuedWork]], dict[str, list[QueuedWork]]] = ({}, {})
    for tenant, jobs in by_tenant.items():
        jobs.sort(key=lambda w: (PRIORITY_RANK[w.priority], w.due or w.created_at, w.created_at, w.job_id))
        st = states[tenant]
        left = {p: q - st.in_use.get(p, 0) for p, q in st.share.quota.items()}
        for w in jobs:
            fits = next((p for p in w.partitions if p in left and left[p] >= w.units), None)
            if fits is not None:
                left[fits] -= w.units
                tiers[0].setdefault(tenant, []).append(w)
            else:
                tiers[1].setdefault(tenant, []).append(w)

    usage = {t: s.usage for t, s in states.items()}
    out: list[Standing] = []
    seen: dict[str, int] = {}
    for tier, queues in enumerate(tiers):
        heap = [(_order_key(usage[t], capacity, states[t].share.weight, t), t) for t in queues]
        heapq.heapify(heap)
        heads = dict.fromkeys(queues, 0)
        while heap:
            _, t = heapq.heappop(heap)
            w = queues[t][heads[t]]
            heads[t] += 1
            seen[t] = seen.get(t, 0) + 1
            in_quota = tier == 0
            out.append(
                Standing(
                    job_id=w.job_id,
                    tenant=t,
                    position=len(out) + 1,
                    tenant_position=seen[t],
                    in_quota=in_quota,
                    ratio=ratios.get(t, 0.0),
                    may_run_onprem=in_quota or states[t].share.may_borrow or not w.partitions,
                    onprem=bool(w.partitions),
                )
            )
            usage[t] = usage[t] + w.demand.scaled(charge)
            if heads[t] < len(queues[t]):
                heapq.heappush(heap, (_order_key(usage[t], capacity, states[t].share.weight, t), t))
    return out


def _recorder(into: list[tuple[Standing, int]]) -> Callable[[Standing, int], None]:
    def on_hold(standing: Standing, units: int) -> None:
        into.append((standing, units))

    return on_hold


def test_the_heads_read_from_the_order_one_standing_at_a_time_equal_the_heads_of_the_whole_order() -> None:
    """A capacity event reads the fair-share order (`standings`) only up to its heads: the same
    heads, and the same standing handed to a hold, as `take_heads` over the whole `order`."""
    policy = load_policy(CONFIGS / "policy-sim.yaml")
    scenario = load_scenario(CONFIGS / "scenarios/flood.yaml")
    jobs = build_jobs(generate(SyntheticParams(jobs=400), scenario.seed), policy, scenario)
    parts = sorted(onprem_partitions(policy))
    capacity = capacity_of(policy)
    rng = random.Random(6)
    stopped_early = holds = 0
    for _ in range(150):
        chosen = rng.sample(jobs, rng.randint(1, 40))
        work = [queued_work(j, tuple(rng.sample(parts, rng.randint(0, 2)))) for j in chosen]
        tenants: dict[str, TenantState] = {
            t: TenantState(
                share=resolve_share(policy, t),
                usage=Demand(rng.uniform(0, 60), rng.uniform(0, 500), rng.uniform(0, 4000)),
                in_use={p: rng.randint(0, 16) for p in parts if rng.random() < 0.5},
            )
            for t in {j.tenant for j in jobs}
            if rng.random() < 0.8
        }
        free, hold, limit = rng.randint(0, 24), rng.random() < 0.5, rng.randint(1, 8)
        whole = _plain_order(work, tenants, capacity, charge=0.5)
        assert order(work, tenants, capacity, charge=0.5) == whole
        lazy = standings(work, tenants, capacity, charge=0.5)
        held_whole: list[tuple[Standing, int]] = []
        held_lazy: list[tuple[Standing, int]] = []
        want = take_heads(whole, jobs, free, hold, limit, _recorder(held_whole))
        got = take_heads(lazy, jobs, free, hold, limit, _recorder(held_lazy))
        assert got == want and held_lazy == held_whole
        stopped_early += next(lazy, None) is not None  # the rest was never put in order
        holds += bool(held_whole)
    assert stopped_early > 50 and holds
