"""`cost_so_far` (szb get / list, GetJob): a job pending in an on-prem backend's own queue (Slurm)
holds no capacity yet and costs nothing; it is priced from when it runs. A cloud instance is
billed from its launch, running or not."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from broker.jobview import job_details
from broker.model import Attempt, AttemptId, AttemptState, Job, JobId, JobState, Offer, SiteId, TenantId
from broker.policy import Policy, load_policy_text
from tests.burst.conftest import POLICY, write_policy
from tests.store.test_runtime_ratios import A800, T0, gpu_job

CLOUD = Offer(site=SiteId("ali-bj"), instance_type="gn7", accelerator="A800", count=8, price_per_hour=100.0)


@pytest.fixture
def policy(tmp_path: Path) -> Policy:
    path = write_policy(tmp_path, POLICY)
    return load_policy_text(path.read_text(), str(path))


def job_on(offer: Offer, state: JobState, attempt: AttemptState) -> tuple[Job, Attempt]:
    job = Job(id=JobId("j"), tenant=TenantId("lab"), spec=gpu_job("j", 2.0), state=state,
              created_at=T0, updated_at=T0, site=offer.site, attempts=1)
    tried = Attempt(id=AttemptId("a1"), job_id=job.id, number=1, site=offer.site, offer=offer, token="t",
                    state=attempt, backend_id="42", created_at=T0, updated_at=T0)
    return job, tried


def test_a_job_pending_in_slurms_queue_costs_nothing_until_it_runs(policy: Policy) -> None:
    job, pending = job_on(A800, JobState.PROVISIONING, AttemptState.PENDING)
    assert job_details(job, [pending], (None, None), policy, T0 + timedelta(hours=1)).cost_so_far == 0.0
    # It ran from 30 min after its attempt; an hour later: 30 min of the A800's 14 CNY/h.
    job, running = job_on(A800, JobState.RUNNING, AttemptState.RUNNING)
    ran = T0 + timedelta(minutes=30)
    got = job_details(job, [running], (ran, None), policy, T0 + timedelta(hours=1)).cost_so_far
    assert got == pytest.approx(7.0)


def test_a_cloud_instance_is_billed_from_its_launch(policy: Policy) -> None:
    job, booting = job_on(CLOUD, JobState.PROVISIONING, AttemptState.PENDING)
    got = job_details(job, [booting], (None, None), policy, T0 + timedelta(hours=1)).cost_so_far
    assert got == pytest.approx(100.0)


def test_a_job_that_ended_while_the_broker_was_down_costs_its_run_not_the_downtime(policy: Policy) -> None:
    """Held-out review: a job that ran 0.9 s was charged 31.7 s, the broker's 30 s downtime
    included: its attempt's end was when the restarted broker read the result, not when it ended."""
    job, done = job_on(A800, JobState.SUCCEEDED, AttemptState.SUCCEEDED)
    ran, ended = T0 + timedelta(minutes=30), T0 + timedelta(hours=1)
    read_back = done.model_copy(update={"updated_at": T0 + timedelta(hours=3)})  # the restart
    got = job_details(job, [read_back], (ran, ended), policy, T0 + timedelta(hours=4)).cost_so_far
    assert got == pytest.approx(7.0)  # the half hour it ran, at 14 CNY/h
