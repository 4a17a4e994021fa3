"""A site that refused a job's own request is kept from that job only, from what the store holds:
a restarted broker (a new store connection) still knows it, and other jobs are not kept off."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from broker.burst import BurstInputs
from broker.dispatch.own_refusals import excluding_refusals, refused_sites
from broker.model import AttemptState, JobSpec, Offer, SiteId, TenantId
from broker.store import SqliteStore, Submission

NOW = datetime(2026, 11, 3, 8, 0, tzinfo=UTC)
EAST = Offer(
    site=SiteId("aws-east"), instance_type="g5.xlarge", accelerator="A10G", count=1, price_per_hour=1.0
)
TOO_BIG = "UserDataTooLarge: user data is 20711 bytes; EC2 allows 16384"
SPEC = JobSpec(name="mid-env", command=("python", "train.py"), runtime_estimate=timedelta(hours=1))


def test_a_refusal_of_the_jobs_own_request_keeps_that_site_from_that_job_after_a_restart(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "broker.db")
    [(refused, _), (other, _)] = store.submit(TenantId("a"), [Submission(SPEC), Submission(SPEC)], NOW)
    for job, error, token in (
        (refused, f"RequestError: aws-east: {TOO_BIG}", "t1"),
        (other, "CapacityError: aws-east: InsufficientInstanceCapacity: none left", "t2"),
    ):
        attempt = store.create_attempt(job.id, EAST.site, EAST, token, NOW)
        store.update_attempt(attempt.id, NOW, state=AttemptState.FAILED, error=error)
    again = SqliteStore(tmp_path / "broker.db")  # as a restarted broker reads it
    refused, other = again.get(refused.id), again.get(other.id)
    assert refused_sites(refused, again) == {"aws-east": TOO_BIG}
    assert refused_sites(other, again) == {}  # a capacity error is the offer's, not the job's
    blocked = BurstInputs(NOW, NOW, blocked=frozenset({"aws-west/us-west-2"}))  # by failover, for all
    inputs = excluding_refusals(blocked, refused, again)
    assert inputs.blocked == {"aws-east", "aws-west/us-west-2"} and isinstance(inputs.blocked, frozenset)
    assert "own request was refused there (UserDataTooLarge" in inputs.block_reasons["aws-east"]
    assert excluding_refusals(BurstInputs(NOW, NOW), other, again) == BurstInputs(NOW, NOW)
