"""Bursts decided on the same voucher balance, then reserved one after the other: the voucher pays
only what is left of it when each reservation is made (SpendLedger on a real SQLite store)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker.burst.money import month_of, split_cost
from broker.clock import ManualClock
from broker.decision import Action, Decision, DecisionFacts
from broker.dispatch.spend import SpendLedger
from broker.model import AttemptId, JobId, JobSpec, Offer, SiteId, TenantId
from broker.policy import Policy, load_policy
from broker.store import SpendEntry, SqliteStore, Submission
from tests.burst.conftest import POLICY, write_policy

NOW = datetime(2026, 11, 10, 4, 0, tzinfo=UTC)
TENANT = TenantId("vouchered")  # voucher v1: 100 CNY at 50% on ali-bj
A10 = Offer(
    site=SiteId("ali-bj"),
    instance_type="ecs.gn7i-c8g1.2xlarge",
    accelerator="A10",
    count=1,
    price_per_hour=1.0,
)


def policy_with_budget(folder: Path, budget: float) -> Policy:
    return load_policy(
        write_policy(folder, POLICY.replace("monthly_budget: 5\n", f"monthly_budget: {budget}\n"))
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "broker.db")
    # Earlier months' bursts drew 99 of the voucher's 100: 1 CNY is left.
    earlier = month_of(NOW - timedelta(days=40))
    assert s.reserve_spend(
        SpendEntry(
            TENANT,
            SiteId("ali-bj"),
            JobId("j-old"),
            AttemptId("j-old-a1"),
            earlier,
            0.0,
            spent=0.0,
            voucher=99.0,
            voucher_id="v1",
            settled=True,
        ),
        tenant_limit=None,
        global_limit=None,
    )
    yield s
    s.close()


def decided(ledger: SpendLedger, policy: Policy, store: SqliteStore, hours: float) -> Decision:
    """A burst of `hours` at 1 CNY/h, split on the money the tenant has now (as a pass reads it)."""
    money = ledger.money(TENANT, NOW, store)
    split = split_cost(TENANT, "ali-bj", hours, policy, money.voucher_balances)
    facts = DecisionFacts(currency="CNY", cash=round(split.cash, 2), voucher=round(split.voucher, 2))
    return Decision(action=Action.RUN, offer=A10, facts=facts, burst=True)


def reserve(ledger: SpendLedger, store: SqliteStore, name: str, decision: Decision) -> bool:
    spec = JobSpec(name=name, command=("python", "train.py"), runtime_estimate=timedelta(hours=1))
    [(job, _)] = store.submit(TENANT, [Submission(spec)], NOW)
    attempt = store.create_attempt(job.id, A10.site, A10, f"tok-{name}", NOW)
    return ledger.reserve(job, attempt, decision, store)


def test_two_bursts_decided_together_do_not_both_draw_the_last_of_a_voucher(
    tmp_path: Path, store: SqliteStore
) -> None:
    policy = policy_with_budget(tmp_path, 4.5)
    ledger = SpendLedger(lambda: policy, ManualClock(NOW))
    # Both decided before either is reserved: each sees the voucher's last 1 CNY.
    first, second = decided(ledger, policy, store, 4.0), decided(ledger, policy, store, 2.0)
    assert (first.facts.cash, first.facts.voucher) == (3.0, 1.0)
    assert (second.facts.cash, second.facts.voucher) == (1.0, 1.0)
    assert reserve(ledger, store, "first", first)  # 3 CNY cash of 4.5
    # The voucher is spent: the second burst is 2 CNY of cash, and 3 + 2 is over the budget.
    assert not reserve(ledger, store, "second", second)
    assert store.voucher_used(TENANT) == {"v1": pytest.approx(100.0)}


def test_a_burst_the_voucher_can_no_longer_pay_reserves_its_cash(tmp_path: Path, store: SqliteStore) -> None:
    policy = policy_with_budget(tmp_path, 50)
    ledger = SpendLedger(lambda: policy, ManualClock(NOW))
    first, second = decided(ledger, policy, store, 4.0), decided(ledger, policy, store, 2.0)
    assert reserve(ledger, store, "first", first) and reserve(ledger, store, "second", second)
    by_name = {e.reserved + e.voucher: e for e in store.spend_entries(month_of(NOW), TENANT)}
    assert (by_name[4.0].reserved, by_name[4.0].voucher) == (3.0, 1.0)
    assert (by_name[2.0].reserved, by_name[2.0].voucher) == (2.0, 0.0), by_name[2.0]
    assert store.voucher_used(TENANT) == {"v1": pytest.approx(100.0)}
    assert ledger.money(TENANT, NOW, store).budget_left == pytest.approx(45.0)


def test_a_burst_a_voucher_pays_in_full_goes_ahead_in_a_month_already_overrun(tmp_path: Path) -> None:
    """Held-out review: settlements took the tenant past its budget (-0.50 left); a burst its
    voucher pays in full needs no cash, yet was refused saying `0.00 in cash, 0.00 left`, by the
    decision and by the store's reservation alike."""
    from broker.burst.cloud import money_refusal
    from broker.burst.money import CostSplit

    policy = load_policy(write_policy(tmp_path, POLICY.replace("discount: 0.5", "discount: 1.0")))
    store = SqliteStore(tmp_path / "overrun.db")
    try:
        month = month_of(NOW)
        overrun = SpendEntry(TENANT, SiteId("ali-bj"), JobId("j-0"), AttemptId("j-0-a1"), month, 0.0,
                             spent=5.5, settled=True)
        assert store.reserve_spend(overrun, tenant_limit=None, global_limit=None)
        ledger = SpendLedger(lambda: policy, ManualClock(NOW))
        money = ledger.money(TENANT, NOW, store)
        assert money.budget_left == pytest.approx(-0.5)
        spec = JobSpec(name="free", command=("python", "x.py"), runtime_estimate=timedelta(hours=2))
        split = money_refusal(spec, A10, TENANT, policy, money, NOW)
        assert isinstance(split, CostSplit) and split.cash == 0 and split.voucher > 0, split
        decision = Decision(action=Action.RUN, offer=A10, facts=DecisionFacts(
            currency="CNY", cash=0.0, voucher=round(split.voucher, 2)), burst=True)
        assert reserve(ledger, store, "free", decision)
        # One that needs cash is still refused.
        decision = Decision(action=Action.RUN, offer=A10, facts=DecisionFacts(
            currency="CNY", cash=0.01, voucher=1.0), burst=True)
        assert not reserve(ledger, store, "cash", decision)
    finally:
        store.close()
