"""A live planner keeps capacity held for a waiting under-share job across passes (issue 14).

A pass that decides only new jobs does not see the waiting job; it must still leave the GPU
that frees for it alone, or a small tenant's 2-GPU job is starved by a flooder's 1-GPU jobs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from broker.burst import is_onprem
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


def spec(gpus: int) -> JobSpec:
    return JobSpec(
        name="train",
        command=("true",),
        runtime_estimate=timedelta(hours=1),
        max_wait=timedelta(hours=10),
        resources=Resources(accelerators=AcceleratorRequest(count=gpus, any_of=("A800",))),
    )


def test_a_new_jobs_pass_leaves_the_held_gpu_to_the_waiting_small_job(tmp_path: Path) -> None:
    (tmp_path / "cloud.csv").write_text(CATALOG)
    text = POLICY.format(configs=CONFIGS, gpus=4).replace(
        "  - {id: t1, kind: university, entity_country: CN, monthly_budget: 100000}\n",
        "  - {id: hog, kind: university, entity_country: CN, monthly_budget: 0}\n"
        "  - {id: small, kind: university, entity_country: CN, monthly_budget: 0}\n",
    )
    (tmp_path / "policy.yaml").write_text(text)
    planner = Planner(PolicyWatcher(tmp_path / "policy.yaml"), ManualClock(NOW))
    store = SqliteStore(tmp_path / "broker.db")
    for i in range(3):  # hog runs on 3 of the 4 cards
        planner.fair.book.started(
            f"a{i}", Holding("hog", "onprem/gpu", Demand(1, 1, 1), 1, NOW - timedelta(hours=2))
        )
    [(small_job, _)] = store.submit(TenantId("small"), [Submission(spec(2))], NOW)
    planner.order_queue([small_job], NOW, full=True)
    snap = planner.snapshot(NOW, [])
    snap.claimed["onprem/gpu"] = 3
    waiting = planner.decide(small_job, snap, store)
    assert waiting.action == Action.WAIT  # one card free, it needs two: the card is held for it

    # Next, a pass over new jobs only, on a fresh snapshot: hog's 1-GPU job would fit the card.
    [(hog_job, _)] = store.submit(TenantId("hog"), [Submission(spec(1))], NOW)
    planner.order_queue([hog_job], NOW, full=False)
    fresh = planner.snapshot(NOW, [])
    fresh.claimed["onprem/gpu"] = 3
    hog = planner.decide(hog_job, fresh, store)
    assert not (
        hog.action == Action.RUN and hog.offer is not None and is_onprem(planner.policy, hog.offer.site)
    )
    assert hog.action == Action.WAIT
    store.close()
