"""A route's provisioning p95 as observed (issue 15: "burst at the last responsible moment,
deadline minus the route's provisioning p95").

Found by running `bench/decision_quality.py --policy configs/policy.yaml`: that policy states no
`provisioning_p95`, so every late job burst 5 min before its deadline while the scenario's
instances took up to 8 min to come up. 216 of its 293 late jobs on `slice-late` were bursts
started that way, about a minute late each. The broker now times each launch and a route's
lead is the larger of the policy's figure and the observed p95.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker.burst import BurstInputs, RouteState, decide, route_states
from broker.burst.provisioning import MIN_LAUNCHES, LaunchTimes, ProvisioningTimes
from broker.burst.spot import provisioning_p95_h
from broker.clock import ManualClock
from broker.decision import Action
from broker.metrics import LiveCollector, LiveView
from broker.model import Attempt, AttemptId, AttemptState, JobId, JobSpec, JobState, Offer, SiteId, TenantId
from broker.planning import Planner
from broker.policy import Policy, PolicyWatcher
from broker.policy.offers import static_offers
from broker.store import JobMove, SqliteStore, Submission
from tests.burst.conftest import write_policy
from tests.burst.test_decision import NOW, job


def test_the_p95_of_the_newest_launches_once_there_are_enough() -> None:
    times = LaunchTimes(window=20)
    for s in range(1, MIN_LAUNCHES):
        times.observe(float(s))
    assert times.p95_s() is None  # too few to say anything of a tail
    times.observe(10.0)
    assert times.p95_s() == 10.0  # nearest rank: the 10th of 10
    for _ in range(20):
        times.observe(60.0)  # the route got slower: the old launches age out of the window
    assert times.p95_s() == 60.0 and len(times) == 20
    times.observe(float("nan"))
    times.observe(-1.0)
    assert len(times) == 20  # a clock gone backwards says nothing


def test_the_lead_is_the_larger_of_the_policys_and_the_observed(policy: Policy) -> None:
    # tests/burst/conftest.py states no provisioning_p95: the schema's 5 min.
    slow = {SiteId("ali-bj"): RouteState(provisioning_p95_s=540.0)}
    fast = {SiteId("ali-bj"): RouteState(provisioning_p95_s=30.0)}
    assert provisioning_p95_h(policy, "ali-bj") * 3600 == 300.0
    assert provisioning_p95_h(policy, "ali-bj", slow) * 3600 == 540.0
    assert provisioning_p95_h(policy, "ali-bj", fast) * 3600 == 300.0  # the policy's is a floor


def _late(routes: dict[SiteId, RouteState]) -> BurstInputs:
    # Projected to start in 2 h, 10 min of its 30 min max_wait left.
    return BurstInputs(
        now=NOW,
        queued_since=NOW - timedelta(minutes=20),
        onprem_capacity={"onprem/a800": (0, 0.0)},
        projected_wait={"onprem/a800": 7200.0},
        routes=routes,
    )


def test_a_late_job_bursts_earlier_on_a_route_seen_to_come_up_slowly(policy: Policy) -> None:
    spec, offers = job(("A800", "A10"), max_wait="30m"), static_offers(policy, read_at=NOW)
    stated = decide(spec, TenantId("lab"), offers, policy, _late({}))
    assert stated.action == Action.WAIT and stated.facts.burst_in_s == 600 - 300
    seen = _late({SiteId("ali-bj"): RouteState(provisioning_p95_s=540.0)})
    slow = decide(spec, TenantId("lab"), offers, policy, seen)
    assert slow.action == Action.WAIT and slow.facts.burst_in_s == 600 - 540
    past = _late({SiteId("ali-bj"): RouteState(provisioning_p95_s=660.0)})  # 11 min: past it now
    now = decide(spec, TenantId("lab"), offers, policy, past)
    assert now.action == Action.RUN and now.burst and now.offer is not None and now.offer.site == "ali-bj"


def test_route_states_carry_the_observed_p95_for_routes_with_no_attempt_now(policy: Policy) -> None:
    learned = ProvisioningTimes()
    for _ in range(MIN_LAUNCHES):
        learned.observe("ali-bj", 420.0)
    learned.observe("aws-east", 99.0)  # one launch: not yet
    states = route_states([], NOW, policy, learned.learned())
    assert states == {SiteId("ali-bj"): RouteState(provisioning_p95_s=420.0)}


T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
OFFERED = Offer(site=SiteId("ali-bj"), instance_type="x", accelerator="A800", count=1, price_per_hour=1.0)


def _attempt(n: int, site: str, created: datetime) -> Attempt:
    offer = Offer(site=SiteId(site), instance_type="x", accelerator="A800", count=1, price_per_hour=1.0)
    return Attempt(
        id=AttemptId(f"a{n}"), job_id=JobId(f"j{n}"), number=1, site=SiteId(site), offer=offer,
        token=f"t{n}", created_at=created, updated_at=created,
    )  # fmt: skip


@pytest.fixture
def planner(tmp_path: Path) -> Planner:
    write_policy(tmp_path)
    return Planner(PolicyWatcher(tmp_path / "policy.yaml"), ManualClock(T0))


def test_the_live_planner_times_cloud_launches_not_on_prem_starts(planner: Planner) -> None:
    for n in range(MIN_LAUNCHES):
        planner.launched(_attempt(n, "ali-bj", T0 - timedelta(minutes=8)), T0)
        planner.launched(_attempt(100 + n, "onprem", T0 - timedelta(hours=3)), T0)  # its queue, not a launch
    routes = planner.snapshot(T0, []).routes
    assert routes[SiteId("ali-bj")].provisioning_p95_s == 480.0
    assert SiteId("onprem") not in routes
    # Operators see it too: one gauge per route with enough launches.
    view = LiveView(
        queue=dict, breakers=dict, blocklist_size=lambda: 0, unhealthy=dict, money=list,
        heartbeat_lag=dict, policy_hash=lambda: "h", currency=lambda: "CNY",
        launch_p95=planner.launches.learned,
    )  # fmt: skip
    [family] = [m for m in LiveCollector(view).collect() if m.name == "szb_route_provisioning_p95_seconds"]
    assert [(s.labels, s.value) for s in family.samples] == [({"site": "ali-bj"}, 480.0)]


def test_a_restarted_planner_reads_the_routes_launch_times_from_the_store(
    planner: Planner, tmp_path: Path
) -> None:
    """The observed p95 was in memory only: every restart, and every HA failover's new scheduler,
    started each route afresh at the policy's figure until it had seen 10 launches again."""
    store = SqliteStore(tmp_path / "broker.db")
    try:
        spec = JobSpec.model_validate({"name": "burst", "command": ["true"], "runtime_estimate": "1h"})
        jobs = store.submit(TenantId("lab"), [Submission(spec)] * MIN_LAUNCHES, T0)
        for n, (job, _) in enumerate(jobs):
            store.transition(job.id, JobState.PLACING, T0)
            store.transition(job.id, JobState.PROVISIONING, T0)
            attempt = store.create_attempt(job.id, SiteId("ali-bj"), OFFERED, f"tok-{n}", T0)
            up = T0 + timedelta(minutes=8, seconds=n)  # 480-489 s: the p95 is the 10th, 489 s
            # (as the dispatcher moves a job whose attempt runs: `AttemptTracking._running`)
            move = JobMove(JobState.RUNNING, "running", "running on ali-bj", expect=JobState.PROVISIONING)
            store.update_attempt(attempt.id, up, state=AttemptState.RUNNING, moves=[move])
        planner.restore_launches(store)
    finally:
        store.close()
    assert planner.snapshot(T0, []).routes[SiteId("ali-bj")].provisioning_p95_s == 489.0
    assert planner.launches.learned() == {"ali-bj": 489.0}
