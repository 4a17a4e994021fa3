"""A burst created in the last milliseconds of a Beijing month is reserved and settled in that month.

Held-out review: `Launching._start` created the attempt at the pass's `now` and `SpendLedger.reserve`
read the clock again; straddling Beijing midnight on the 1st, the reservation was filed under the
next month while settling looked in the attempt's, so the whole estimate stayed reserved for good
(December's budget lost 100 CNY for a 1 CNY run) and `szb spend` never listed it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from broker.burst.money import month_of
from broker.clock import ManualClock
from broker.decision import Action, Decision, DecisionFacts
from broker.dispatch.spend import SpendLedger
from broker.model import JobSpec, Offer, SiteId, TenantId
from broker.policy import load_policy
from broker.store import SqliteStore, Submission
from tests.burst.conftest import POLICY, write_policy


def test_a_reservation_straddling_the_month_is_filed_and_settled_in_its_attempts_month(
    tmp_path: Path,
) -> None:
    text = POLICY.replace("monthly_budget: 5\n", "monthly_budget: 500\n")
    policy = load_policy(write_policy(tmp_path, text))
    tenant = TenantId("vouchered")
    offer = Offer(site=SiteId("ali-bj"), instance_type="ecs.gn7i-c8g1.2xlarge", accelerator="A10", count=1,
                  price_per_hour=10.0)
    store = SqliteStore(tmp_path / "broker.db")
    pass_now = datetime(2026, 11, 30, 15, 59, 59, 995000, tzinfo=UTC)  # 23:59:59.995 Beijing, Nov 30
    clock = ManualClock(pass_now + timedelta(milliseconds=10))  # 00:00:00.005 Beijing, Dec 1
    ledger = SpendLedger(lambda: policy, clock)
    spec = JobSpec(name="edge", command=("python", "train.py"), runtime_estimate=timedelta(hours=10))
    [(job, _)] = store.submit(tenant, [Submission(spec)], pass_now)
    attempt = store.create_attempt(job.id, offer.site, offer, "tok", pass_now)  # as a launch does
    decision = Decision(action=Action.RUN, offer=offer, burst=True,
                        facts=DecisionFacts(currency="CNY", cash=100.0, voucher=0.0))
    assert ledger.reserve(job, attempt, decision, store)
    assert [e.month for e in store.unsettled_spend()] == [month_of(attempt.created_at)] == ["2026-11"]
    ledger.settle(job, attempt, store, ended=pass_now + timedelta(minutes=6))
    assert store.unsettled_spend() == []
    december = ledger.money(tenant, datetime(2026, 12, 2, tzinfo=UTC), store)
    # Nothing of the estimate is held: December counts only the part of the 10 ms run in it.
    assert december.budget_left is not None and 499.999 < december.budget_left <= 500
    store.close()
