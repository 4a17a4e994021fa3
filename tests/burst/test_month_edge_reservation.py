"""A burst created in the last milliseconds of a Beijing month is reserved and settled in that month.

Held-out review: `Launching._start` created the attempt at the pass's `now` and `SpendLedger.reserve`
read the clock again; straddling Beijing midnight on the 1st, the reservation was filed under the
next month while settling looked in the attempt's, so the whole estimate stayed reserved for good
(December's budget lost 100 CNY for a 1 CNY run) and `szb spend` never listed it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker.burst import decide
from broker.burst.money import month_of
from broker.clock import ManualClock
from broker.decision import Action, Decision, DecisionFacts
from broker.dispatch.spend import SpendLedger
from broker.model import JobSpec, Offer, SiteId, TenantId
from broker.policy import load_policy
from broker.store import SqliteStore, Submission
from tests.burst.conftest import POLICY, write_policy
from tests.burst.test_decision import inputs, offers
from tests.burst.test_decision import job as job_spec


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


def test_a_burst_whose_run_reaches_a_spent_next_month_is_not_decided(tmp_path: Path) -> None:
    """The decision judges a burst's cash month by month as the store reserves it: a run reaching
    into a month its budget cannot pay waits with the reason, and is not decided, made, refused by
    the store and requeued at every pass."""
    text = POLICY.replace("  - {id: lab, kind: partner, entity_country: SG}\n",
                          "  - {id: lab, kind: partner, entity_country: SG, monthly_budget: 100}\n")
    policy = load_policy(write_policy(tmp_path, text))
    tenant = TenantId("lab")
    store = SqliteStore(tmp_path / "broker.db")
    now = datetime(2026, 11, 30, 14, 0, tzinfo=UTC)  # 22:00 Beijing, Nov 30
    clock = ManualClock(now)
    ledger = SpendLedger(lambda: policy, clock)
    # A 100 h burst reserved now for 95 CNY: 2 h of it in November (1.90), 93.10 in December.
    first = JobSpec(name="long", command=("true",), runtime_estimate=timedelta(hours=100))
    [(job, _)] = store.submit(tenant, [Submission(first)], now)
    offer = Offer(site=SiteId("ali-bj"), instance_type="ecs.gn7i-c8g1.2xlarge", accelerator="A10", count=1,
                  price_per_hour=0.95)
    attempt = store.create_attempt(job.id, offer.site, offer, "tok", now)
    held = Decision(action=Action.RUN, offer=offer, burst=True,
                    facts=DecisionFacts(currency="CNY", cash=95.0, voucher=0.0))
    assert ledger.reserve(job, attempt, held, store)
    money = ledger.money(tenant, now, store)
    # A 3 h job on an A10 at 13.90: 41.70, 27.80 in November (2 h) and 13.90 in December.
    spec = job_spec(("A10",), runtime="3h", max_wait="1m", spot="never")
    d = decide(spec, tenant, offers(policy, free=0, wait_s=7200), policy, inputs(now=now, queued_since=now,
                                                                                   money=money))
    assert not d.burst, d.reasons
    assert money.budget_left == pytest.approx(98.10)
    assert money.ahead == {"2026-12": (pytest.approx(6.90), None)}
    said = "/ondemand would cost 13.90 CNY in cash in 2026-12, where its run goes on, 6.90 left then"
    assert any(r.startswith("budget: ali-bj/") and said in r for r in d.reasons), d.reasons
    # ... as the store would refuse it.
    [(second, _)] = store.submit(tenant, [Submission(spec)], now)
    cloud = next(o for o in offers(policy, free=0, wait_s=0) if o.site == "ali-bj" and not o.spot)
    try_it = store.create_attempt(second.id, cloud.site, cloud, "tok-2", now)
    burst = Decision(action=Action.RUN, offer=cloud, burst=True,
                     facts=DecisionFacts(currency="CNY", cash=41.70, voucher=0.0))
    assert not ledger.reserve(second, try_it, burst, store)
    store.close()
