"""The global burst cap within one dispatch pass (found by a held-out review of issue 6): a burst
drops every tenant's cached money, and a reservation the store refuses anyway is the broker's own
doing, told by the limit that refused it (on a real SQLite store)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from broker.burst.money import TenantMoney
from broker.burst.routes import route_states
from broker.burst.snapshot import PassSnapshot
from broker.dispatch.records import used_an_attempt
from broker.dispatch.reservations import refused_reservation, reservation_refusal
from broker.model import AttemptState, JobSpec, JobState, Offer, Resources, SiteId, TenantId
from broker.policy import load_policy
from broker.store import SqliteStore, Submission
from tests.burst.conftest import write_policy

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
CLOUD = Offer(site=SiteId("ali-bj"), instance_type="ecs.gn7i", accelerator="A10", count=1, price_per_hour=5)


def test_a_burst_drops_every_tenants_money_when_a_global_cap_counts_it() -> None:
    # Each tenant's `global_left` counts the burst: a stale one sends the next job to a refused burst.
    snap = PassSnapshot(NOW, [], money={"aa": TenantMoney(global_left=8), "bb": TenantMoney(global_left=8)})
    snap.launch("aa", CLOUD)
    assert snap.money == {}
    snap.money.update(bb=TenantMoney(global_left=3))
    snap.unlaunch("aa", CLOUD)  # (its money is back for everyone)
    assert snap.money == {}


def test_without_a_global_cap_a_burst_drops_only_its_tenants_money() -> None:
    snap = PassSnapshot(NOW, [], money={"aa": TenantMoney(budget_left=8), "bb": TenantMoney(budget_left=8)})
    snap.launch("aa", CLOUD)
    assert snap.money == {"bb": TenantMoney(budget_left=8)}


def test_the_refusal_names_the_limit_that_refused() -> None:
    assert reservation_refusal(TenantMoney(budget_left=None, global_left=3.0), 5.0) == (
        "the global burst cap is reached"
    )
    assert "budget" in reservation_refusal(TenantMoney(budget_left=2.0, global_left=100.0), 5.0)


def test_a_refused_reservation_counts_against_neither_the_job_nor_the_route(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "broker.db")
    spec = JobSpec(
        name="b-urgent", command=("true",), runtime_estimate=timedelta(minutes=5),
        resources=Resources(accelerators={"count": 1, "any_of": ("A10",)}),
    )  # fmt: skip
    [(job, _)] = store.submit(TenantId("bb"), [Submission(spec=spec)], NOW)
    job = store.transition(job.id, JobState.PLACING, NOW, kind="placed", site=CLOUD.site)
    attempt = store.create_attempt(job.id, CLOUD.site, CLOUD, "tok-1", NOW)
    why = reservation_refusal(TenantMoney(global_left=3.0), 5.0)
    refused_reservation(store, job, attempt, why, NOW)
    [closed] = store.attempts_for(job.id)
    assert closed.state == AttemptState.CANCELLED and closed.broker_side, closed
    assert not used_an_attempt(closed)
    policy = load_policy(write_policy(tmp_path))
    assert route_states([closed], NOW, policy).get(CLOUD.site) is None  # no failure, no recent attempt
    queued = store.get(job.id)
    assert queued.state == JobState.QUEUED
    assert queued.message == "not bursting to ali-bj: the global burst cap is reached; waiting on-prem"
    store.close()
