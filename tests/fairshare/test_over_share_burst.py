"""The burst decision knows a tenant's position (issue 14): far over its share, a job bursts.

The planner, its store and its policy are real; the tenant's on-prem usage is what the
fair-share book holds (as after a pass that saw its running attempts).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from broker.clock import ManualClock
from broker.decision import Action
from broker.fairshare.book import Holding
from broker.fairshare.usage import Demand
from broker.model import AcceleratorRequest, JobSpec, Resources, TenantId
from broker.planning import Planner
from broker.policy import PolicyWatcher
from broker.store import SqliteStore, Submission
from tests.sim.conftest import CATALOG, CONFIGS, POLICY

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def test_a_tenant_far_over_its_share_bursts_instead_of_waiting(tmp_path: Path) -> None:
    (tmp_path / "cloud.csv").write_text(CATALOG)
    text = (
        POLICY.format(configs=CONFIGS, gpus=4)
        .replace("price_hour: 2.0,", "price_hour: 2.0, expected_wait: 1h,")
        # The fluid model: the partition's expected wait stands in for the hog's running work
        # (the book's holdings here, not running attempts a projection would read).
        .replace("  hysteresis: 0s\n", "  hysteresis: 0s\n  wait_model: fluid\n")
        .replace(
            "  - {id: t1, kind: university, entity_country: CN, monthly_budget: 100000}\n",
            "  - {id: hog, kind: university, entity_country: CN, monthly_budget: 100000}\n"
            "  - {id: small, kind: university, entity_country: CN, monthly_budget: 100000}\n"
            "fair_share: {over_share_burst_ratio: 1.5}\n",
        )
    )
    (tmp_path / "policy.yaml").write_text(text)
    planner = Planner(PolicyWatcher(tmp_path / "policy.yaml"), ManualClock(NOW))
    store = SqliteStore(tmp_path / "broker.db")
    spec = JobSpec(
        name="train",
        command=("true",),
        runtime_estimate=timedelta(hours=1),
        max_wait=timedelta(hours=10),
        resources=Resources(accelerators=AcceleratorRequest(count=1, any_of=("A800",))),
    )
    # hog holds all 4 cards; small holds none. Both have one queued job that may wait 10 h.
    for i in range(4):
        planner.fair.book.started(
            f"a{i}", Holding("hog", "onprem/gpu", Demand(1, 1, 1), 1, NOW - timedelta(hours=2))
        )
    [(hog_job, _)] = store.submit(TenantId("hog"), [Submission(spec)], NOW)
    [(small_job, _)] = store.submit(TenantId("small"), [Submission(spec)], NOW)
    ordered = planner.order_queue([hog_job, small_job], NOW, full=True)
    assert [j.tenant for j in ordered] == ["small", "hog"]
    assert "tenant hog at" in (planner.standing(hog_job.id) or "")

    snap = planner.snapshot(NOW, [])
    snap.claimed["onprem/gpu"] = 4  # the partition is full
    small = planner.decide(small_job, snap, store)
    hog = planner.decide(hog_job, snap, store)
    # small waits on-prem within its max_wait; hog, at 2x its share (> 1.5), bursts now.
    assert small.action == Action.WAIT and not small.burst
    assert hog.action == Action.RUN and hog.burst and hog.offer is not None and hog.offer.site == "cloud"
    assert hog.fair_share is not None and hog.fair_share.share_ratio > 1.5
    store.close()
