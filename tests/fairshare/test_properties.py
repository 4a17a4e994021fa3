"""Fair-share order properties: quota work never behind borrowed work; weights hold in the long run."""

from __future__ import annotations

import heapq
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.fairshare import Demand, Interval, QueuedWork, Share, TenantState, UsageLedger, order, usage
from broker.fairshare.usage import ZERO, charge_factor
from broker.model import Priority

T0 = datetime(2026, 12, 1, tzinfo=UTC)
PARTS = ("site/a", "site/b")
CAP = Demand(accelerators=32, cpus=512, memory_gb=4096)

tenants_st = st.dictionaries(
    st.sampled_from(["t1", "t2", "t3", "t4"]),
    st.tuples(
        st.floats(0.1, 10),  # weight
        st.dictionaries(st.sampled_from(PARTS), st.integers(0, 16), max_size=2),  # quota
        st.dictionaries(st.sampled_from(PARTS), st.integers(0, 16), max_size=2),  # in use
        st.floats(0, 32),  # accelerator usage
        st.booleans(),  # may borrow
    ),
    min_size=1,
)
job_st = st.tuples(
    st.sampled_from(["t1", "t2", "t3", "t4", "t5"]),
    st.sampled_from(list(Priority)),
    st.integers(0, 10_000),
    st.integers(1, 8),
    st.lists(st.sampled_from(PARTS), unique=True, max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(tenants_st, st.lists(job_st, max_size=40))
def test_no_job_within_quota_waits_behind_borrowed_work(tenants: dict, jobs: list) -> None:
    states = {
        t: TenantState(
            share=Share(weight=w, quota=q, may_borrow=b), usage=Demand(acc, acc * 4, acc * 32), in_use=u
        )
        for t, (w, q, u, acc, b) in tenants.items()
    }
    work = [
        QueuedWork(f"j{i}", t, prio, T0 - timedelta(seconds=age), Demand(n, n * 4, n * 32), n, tuple(parts))
        for i, (t, prio, age, n, parts) in enumerate(jobs)
    ]
    got = order(work, states, CAP)
    assert sorted(s.job_id for s in got) == sorted(w.job_id for w in work)
    tiers = [s.in_quota for s in got]
    assert tiers == sorted(tiers, reverse=True), "a borrowed job is ahead of a job within its quota"
    # In-quota jobs really fit in what is left of their tenant's quota on some partition.
    by_id = {w.job_id: w for w in work}
    for t in {w.tenant for w in work}:
        mine = [by_id[s.job_id] for s in got if s.tenant == t and s.in_quota]
        state = states.get(t, TenantState())
        left = sum(max(0, q - state.in_use.get(p, 0)) for p, q in state.share.quota.items())
        assert sum(w.units for w in mine) <= left
    # Within a tenant: priority, then age.
    rank = {Priority.HIGH: 0, Priority.NORMAL: 1, Priority.LOW: 2}
    for t in {w.tenant for w in work}:
        for tier in (True, False):
            seq = [by_id[s.job_id] for s in got if s.tenant == t and s.in_quota == tier]
            keys = [(rank[w.priority], w.created_at, w.job_id) for w in seq]
            assert keys == sorted(keys)
    # Borrowed work of a tenant that may not borrow is never cleared for on-prem.
    for s in got:
        w = by_id[s.job_id]
        if not s.in_quota and w.partitions and not states.get(s.tenant, TenantState()).share.may_borrow:
            assert not s.may_run_onprem


def simulate(
    weights: dict[str, float], runtimes: dict[str, int], half_life_s: float, slots: int
) -> dict[str, float]:
    """Every tenant floods; a freed slot goes to the head of the fair order. Slot-seconds per tenant."""
    cap = Demand(accelerators=slots, cpus=slots * 4, memory_gb=slots * 32)
    ledger = UsageLedger(half_life_s)
    running: list[tuple[float, str, float]] = []  # (end, tenant, start)
    used = dict.fromkeys(weights, 0.0)
    t, horizon, n = 0.0, 60.0 * max(runtimes.values()), 0
    while t < horizon:
        while len(running) < slots:
            now = T0 + timedelta(seconds=t)
            alloc: dict[str, Demand] = {}
            live = []
            for _, tenant, start in running:
                alloc[tenant] = alloc.get(tenant, ZERO) + Demand(1, 4, 32)
                live.append(Interval(tenant, Demand(1, 4, 32), T0 + timedelta(seconds=start)))
            u = usage(alloc, ledger.history(now, live), half_life_s)
            states = {k: TenantState(share=Share(weight=w), usage=u.get(k, ZERO)) for k, w in weights.items()}
            # One queued job per tenant is enough: each always has more behind it.
            work = [
                QueuedWork(f"{k}-{n}", k, Priority.NORMAL, now, Demand(1, 4, 32), 1, ("p",)) for k in weights
            ]
            head = order(work, states, cap, charge=charge_factor(half_life_s))[0]
            heapq.heappush(running, (t + runtimes[head.tenant], head.tenant, t))
            n += 1
        end, tenant, start = heapq.heappop(running)
        t = end
        used[tenant] += end - start
        ledger.add(
            Interval(tenant, Demand(1, 4, 32), T0 + timedelta(seconds=start), T0 + timedelta(seconds=end))
        )
    return used


@settings(max_examples=8, deadline=None)
@given(
    st.lists(st.floats(0.5, 4), min_size=2, max_size=3),
    st.lists(st.integers(60, 1200), min_size=3, max_size=3),
    st.sampled_from([0.0, 3600.0, 86400.0]),
)
def test_weights_are_respected_in_the_long_run(
    weights: list[float], runtimes: list[int], half_life: float
) -> None:
    names = [f"t{i}" for i in range(len(weights))]
    slots = 16
    used = simulate(
        dict(zip(names, weights, strict=True)), dict(zip(names, runtimes, strict=False)), half_life, slots
    )
    total_used, total_w = sum(used.values()), sum(weights)
    for name, w in zip(names, weights, strict=True):
        got, want = used[name] / total_used, w / total_w
        # Within 10% of the entitled share, give or take the one slot whole jobs round to.
        assert abs(got - want) <= 0.1 * want + 1 / slots, (name, got, want)
