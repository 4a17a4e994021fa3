"""A job Slurm preempts on-prem does not shut the on-prem site for every other job.

A spot preemption blocks the cloud region for `blocklist_ttl.capacity` (the next try goes
elsewhere). The same block followed an on-prem attempt that Slurm ended PREEMPTED (a
higher-priority job took its GPUs): every job of every tenant was kept off the whole on-prem
site for those minutes, so they waited or burst to paid clouds while Slurm had room. On-prem,
the capacity reading says when there is room again, as it does after an on-prem capacity error.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from broker.clock import ManualClock
from broker.dispatch.health import SiteHealth
from broker.model import Attempt, AttemptId, AttemptState, JobId, Offer, SiteId
from broker.policy import load_policy

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
NOW = datetime(2026, 12, 3, 1, 0, tzinfo=UTC)


def _preempted(site: str, region: str, instance_type: str, zone: str = "") -> Attempt:
    offer = Offer(site=SiteId(site), instance_type=instance_type, accelerator="A800", count=1,
                  price_per_hour=10.0, region=region, zone=zone, spot=True)
    return Attempt(id=AttemptId(f"j-{site}-a1"), job_id=JobId(f"j-{site}"), number=1, site=SiteId(site),
                   offer=offer, token="t" * 32, state=AttemptState.PREEMPTED, backend_id="42",
                   created_at=NOW, updated_at=NOW)


def test_a_slurm_preemption_blocks_no_one_a_spot_preemption_blocks_its_capacity_pool() -> None:
    policy = load_policy(CONFIGS / "policy.yaml")
    health = SiteHealth(lambda: policy, ManualClock(NOW))
    health.record_preemption(_preempted("shangzhuang-onprem", "beijing-haidian", "a800"))
    assert health.blocked() == frozenset(), health.blocked()
    health.record_preemption(_preempted("aws-us-east-1", "us-east-1", "p4d.24xlarge", "us-east-1b"))
    assert health.blocked() == frozenset({"aws-us-east-1/us-east-1b/p4d.24xlarge/spot"})
