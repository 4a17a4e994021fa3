"""A voucher pays for a run only up to its expiry: the end of its `expires` day, Beijing time.

Held-out review: a burst reserved at 23:00 Beijing on the voucher's last day and settled 12 h
later at 10 CNY/h had all 120 CNY paid by the voucher (settling never read `expires`), and the
reservation raised as it ran past its estimate counted none of it as cash.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker.burst.money import TenantMoney
from broker.clock import ManualClock
from broker.decision import Action, Decision, DecisionFacts
from broker.dispatch.spend import SpendLedger
from broker.model import JobSpec, Offer, SiteId, TenantId
from broker.policy import load_policy
from broker.store import SqliteStore, Submission
from tests.burst.conftest import POLICY, write_policy

VOUCHER = "vouchers: [{id: v1, balance: 100, discount: 0.5, sites: [ali-bj]}]"


def test_a_run_across_the_vouchers_last_midnight_pays_cash_for_the_time_after(tmp_path: Path) -> None:
    text = POLICY.replace("monthly_budget: 5\n", "monthly_budget: 5000\n").replace(
        VOUCHER, "vouchers: [{id: v1, balance: 1000, discount: 1.0, sites: [ali-bj], expires: 2026-12-06}]"
    )
    policy = load_policy(write_policy(tmp_path, text))
    offer = Offer(
        site=SiteId("ali-bj"),
        instance_type="ecs.gn7i-c8g1.2xlarge",
        accelerator="A10",
        count=1,
        price_per_hour=10.0,
    )
    store = SqliteStore(tmp_path / "broker.db")
    start = datetime(2026, 12, 6, 15, 0, tzinfo=UTC)  # 23:00 Beijing on the voucher's last day
    clock = ManualClock(start)
    ledger = SpendLedger(lambda: policy, clock)
    spec = JobSpec(name="late", command=("python", "train.py"), runtime_estimate=timedelta(hours=1))
    [(job, _)] = store.submit(TenantId("vouchered"), [Submission(spec)], start)
    attempt = store.create_attempt(job.id, offer.site, offer, "tok", start)
    store.update_attempt(attempt.id, start, backend_id="i-1")
    decision = Decision(
        action=Action.RUN,
        offer=offer,
        burst=True,
        facts=DecisionFacts(currency="CNY", cash=0.0, voucher=10.0),
    )
    assert ledger.reserve(job, attempt, decision, store)
    clock.set(start + timedelta(hours=3))  # past its 1 h estimate: 30 CNY so far, 10 before expiry
    ledger.accrue(store.attempts_for(job.id), store)
    [running] = store.unsettled_spend()
    assert (running.reserved, running.voucher) == (pytest.approx(20.0), pytest.approx(10.0))
    end = start + timedelta(hours=12)
    clock.set(end)
    ledger.settle(job, attempt, store, ended=end)
    [settled] = store.spend_entries("2026-12")
    assert (settled.spent, settled.voucher) == (pytest.approx(110.0), pytest.approx(10.0))
    store.close()


def test_a_burst_whose_estimate_runs_past_the_expiry_is_priced_in_cash_for_that_part(tmp_path: Path) -> None:
    """Review: a 12 h job decided at 23:00 Beijing on the voucher's last day was let in on voucher
    money (0 cash against a 5 CNY budget) and settled at 152.90 CNY cash. The decision now splits
    the estimate at the expiry, as settling does, so the budget refuses it."""
    from broker.burst import BurstInputs, decide
    from broker.policy.offers import static_offers

    text = POLICY.replace(
        VOUCHER, "vouchers: [{id: v1, balance: 1000, discount: 1.0, sites: [ali-bj], expires: 2026-12-06}]"
    )
    policy = load_policy(write_policy(tmp_path, text))
    start = datetime(2026, 12, 6, 15, 0, tzinfo=UTC)  # 23:00 Beijing, the voucher's last hour
    store = SqliteStore(tmp_path / "broker.db")
    ledger = SpendLedger(lambda: policy, ManualClock(start))
    spec = JobSpec.model_validate({"name": "late", "command": ["true"], "runtime_estimate": "12h",
                                   "max_wait": "1m", "spot": "never",
                                   "resources": {"accelerators": {"count": 1, "any_of": ["A800", "A10"]}}})
    offers = [o.model_copy(update={"free": 0, "expected_wait_s": 5 * 3600}) if o.site == "onprem" else o
              for o in static_offers(policy, read_at=start)]
    money = ledger.money(TenantId("vouchered"), start, store)
    store.close()
    decision = decide(spec, TenantId("vouchered"), offers, policy,
                      BurstInputs(now=start, queued_since=start - timedelta(hours=1), money=money))
    assert not decision.burst, decision.reasons
    assert any("budget" in r and "in cash" in r for r in decision.reasons), decision.reasons


def test_a_voucher_expiring_during_the_run_pays_only_its_part_in_the_wait_or_burst_choice(
    tmp_path: Path,
) -> None:
    """Held-out review: with no budget to stop it, a 20 h A10 run decided 4 h before the voucher's
    end was compared with waiting as if the voucher paid it all ("ali-bj costs 0.00 < 86.67 for
    waiting") while the tenant would pay 222.40 in cash (a run it should not have made). The
    placement's voucher term now pays the part before the expiry, as the money split does."""
    from broker.burst import BurstInputs, decide
    from broker.policy.offers import static_offers

    text = POLICY.replace("monthly_budget: 5\n", "monthly_budget: 100000\n").replace(
        VOUCHER, "vouchers: [{id: v1, balance: 1000, discount: 1.0, sites: [ali-bj], expires: 2026-11-30}]"
    )
    policy = load_policy(write_policy(tmp_path, text))
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)  # 20:00 Beijing: 4 h of the voucher left
    spec = JobSpec.model_validate({"name": "long", "command": ["true"], "runtime_estimate": "20h",
                                   "max_wait": "5m", "spot": "never",
                                   "resources": {"accelerators": {"count": 1, "any_of": ["A800", "A10"]}}})
    offers = [o.model_copy(update={"free": 0, "expected_wait_s": 1800}) if o.site == "onprem" else o
              for o in static_offers(policy, read_at=now)]
    inputs = BurstInputs(now=now, queued_since=now, money=TenantMoney(voucher_balances={"v1": 1000.0}))
    decision = decide(spec, TenantId("vouchered"), offers, policy, inputs)
    # Compared with waiting at what the tenant pays: 16 of the 20 h in cash (13.90 CNY/h).
    assert decision.facts.cloud_total_cost == pytest.approx(222.4, abs=0.01), decision.facts
    assert decision.facts.cash == pytest.approx(222.4, abs=0.01), decision.facts
    assert any("ali-bj costs 222.40 <" in r for r in decision.reasons), decision.reasons
    later = BurstInputs(now=now - timedelta(days=2), queued_since=now - timedelta(days=2),
                        money=TenantMoney(voucher_balances={"v1": 1000.0}))
    spec_short = spec.model_copy(update={"runtime_estimate": timedelta(hours=2)})
    early = decide(spec_short, TenantId("vouchered"), offers, policy, later)  # all of it before then
    assert early.burst and early.facts.cash == 0.0, early.reasons
