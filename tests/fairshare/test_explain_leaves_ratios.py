"""`szb explain` (FairQueue.preview) is a what-if: it ranks the job in the last whole queue but
leaves the queue's share ratios as the last pass made them. The dispatcher reads those ratios
between a pass's decisions (firm deadlines, late claims, reclaim victims); an explain landing
there counted a job nobody submitted, and its tenant, as active (explain12)."""

from __future__ import annotations

from pathlib import Path

from broker.fair_queue import FairQueue
from broker.model import Job, JobId, JobState, TenantId
from broker.policy import load_policy_text
from tests.burst.conftest import POLICY, write_policy
from tests.store.test_runtime_ratios import NOW, T0, gpu_job


def test_explain_does_not_change_the_share_ratios_a_pass_decides_on(tmp_path: Path) -> None:
    path = write_policy(tmp_path, POLICY)
    policy = load_policy_text(path.read_text(), str(path))
    fair = FairQueue()
    queued = [
        Job(id=JobId(f"j{i}"), tenant=TenantId("lab"), spec=gpu_job(f"j{i}", 1.0), state=JobState.QUEUED,
            created_at=T0, updated_at=T0)
        for i in range(3)
    ]
    fair.order(policy, queued, NOW, remember=True)
    before = dict(fair.ratios)
    assert set(before) == {"lab"}
    standing = fair.preview(policy, gpu_job("what-if", 1.0), TenantId("poor"), NOW)
    assert standing.tenant == "poor" and standing.position >= 1
    assert fair.ratios == before
