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


def test_a_refusal_by_one_slurm_partition_keeps_the_job_off_that_partition_only(tmp_path: Path) -> None:
    """A review: one partition's MaxTime refusal kept the job off the whole site, so it burst
    (or failed) though the site's other partition would take it."""
    from adapters.base import RequestError
    from broker.burst import decide
    from broker.dispatch.own_refusals import after_own_refusal
    from broker.model import JobState
    from broker.policy import load_policy
    from broker.policy.offers import static_offers
    from tests.burst.conftest import POLICY, write_policy

    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    text = POLICY.replace(
        "      - {name: a800, accelerator: A800, count_per_node: 8, price_hour: 14.0}",
        "      - {name: short, accelerator: A800, count_per_node: 8, price_hour: 14.0}\n"
        "      - {name: long, accelerator: A100, count_per_node: 8, price_hour: 14.0}",
    )
    policy = load_policy(write_policy(tmp_path, text))
    offers = [o.model_copy(update={"free": 8, "expected_wait_s": 0}) if o.site == "onprem" else o
              for o in static_offers(policy, read_at=now)]  # fmt: skip
    spec = JobSpec.model_validate({
        "name": "j", "command": ["true"], "runtime_estimate": "3h", "max_wait": "2h",
        "resources": {"accelerators": {"count": 1, "any_of": ["A800", "A100", "A10"]}},
    })  # fmt: skip
    store = SqliteStore(tmp_path / "b.db")
    [(job, _)] = store.submit(TenantId("lab"), [Submission(spec)], now)
    short = next(o for o in offers if o.site == "onprem" and o.accelerator == "A800")
    attempt = store.create_attempt(job.id, short.site, short, "tok", now)
    exc = RequestError("onprem", "ESLURM_INVALID_TIME_LIMIT", "over partition short's MaxTime of 240 min")
    store.update_attempt(attempt.id, now, state=AttemptState.FAILED, error=f"{type(exc).__name__}: {exc}")
    job = store.get(job.id)
    assert after_own_refusal(job, exc, store, offers=offers, policy=policy, now=now)[0] == JobState.QUEUED
    inputs = excluding_refusals(BurstInputs(now=now, queued_since=now), job, store)
    assert sorted(inputs.blocked) == [short.key]
    decided = decide(spec, TenantId("lab"), offers, policy, inputs)
    assert decided.offer is not None
    assert (decided.offer.site, decided.offer.accelerator) == ("onprem", "A100")
