"""A burst decided on one voucher but reserved when another pays reserves the other's split.

Found by a held-out review of issue 6: the decision priced voucher x (90% off) at 90 voucher +
10 cash; by the reservation x was spent, so the entry went on voucher y (50% off) still at 90 +
10, passed the budget on 10 of cash, and settling billed 50: the month ended 30 past its budget.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker.clock import ManualClock
from broker.decision import Action, Decision, DecisionFacts
from broker.dispatch.spend import SpendLedger
from broker.model import JobSpec, Offer, SiteId, TenantId
from broker.policy import load_policy
from broker.store import SpendEntry, SqliteStore, Submission
from tests.burst.conftest import POLICY, write_policy

NOW = datetime(2026, 11, 10, 4, 0, tzinfo=UTC)
OFFER = Offer(site=SiteId("ali-bj"), instance_type="ecs.gn7i-c8g1.2xlarge", accelerator="A10", count=1,
              price_per_hour=10.0)
TENANT = TenantId("vouchered")


def policy_text(budget: int) -> str:
    return POLICY.replace(
        "    vouchers: [{id: v1, balance: 100, discount: 0.5, sites: [ali-bj]}]\n",
        "    vouchers: [{id: x, balance: 90, discount: 0.9, sites: [ali-bj]},"
        " {id: y, balance: 1000, discount: 0.5, sites: [ali-bj]}]\n",
    ).replace("monthly_budget: 5\n", f"monthly_budget: {budget}\n")


@pytest.mark.parametrize("budget", [20, 60])
def test_the_voucher_that_pays_sets_the_cash_reserved(tmp_path: Path, budget: int) -> None:
    text = policy_text(budget)
    assert "id: y" in text and f"monthly_budget: {budget}" in text
    policy = load_policy(write_policy(tmp_path, text))
    store = SqliteStore(tmp_path / "broker.db")
    ledger = SpendLedger(lambda: policy, ManualClock(NOW))
    spec = JobSpec(name="j2", command=("python", "train.py"), runtime_estimate=timedelta(hours=10))
    # Another of the tenant's bursts has drawn all of voucher x meanwhile.
    [(other, _)] = store.submit(TENANT, [Submission(spec.model_copy(update={"name": "j1"}))], NOW)
    first = store.create_attempt(other.id, OFFER.site, OFFER, "t0", NOW)
    store.reserve_spend(SpendEntry(tenant=TENANT, site=OFFER.site, job_id=other.id, attempt_id=first.id,
                                   month="2026-11", reserved=0.0, voucher=90.0, voucher_id="x", fx=1.0),
                        tenant_limit=budget, global_limit=None, voucher_balances={"x": 90})
    store.settle_spend(first.id, spent=0.0, voucher=90.0)
    # Decided on balances where x still had 90: 100 CNY = 90 voucher + 10 cash.
    [(job, _)] = store.submit(TENANT, [Submission(spec)], NOW)
    attempt = store.create_attempt(job.id, OFFER.site, OFFER, "tok", NOW)
    decision = Decision(action=Action.RUN, offer=OFFER, burst=True,
                        facts=DecisionFacts(currency="CNY", cash=10.0, voucher=90.0))
    reserved = ledger.reserve(job, attempt, decision, store)
    if budget == 20:  # y pays 50: the 50 of cash is more than the budget
        assert not reserved
    else:
        [entry] = [e for e in store.unsettled_spend() if e.attempt_id == attempt.id]
        assert reserved and (entry.voucher_id, entry.voucher, entry.reserved) == ("y", 50.0, 50.0)
        ledger.clock = ManualClock(NOW + timedelta(hours=10))
        ledger.settle(job, attempt, store)
        left = ledger.money(TENANT, NOW, store).budget_left
        assert left is not None and left >= 0, left
    store.close()
