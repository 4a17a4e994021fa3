"""An on-prem launch refused once is a race (a reclaimed job's slots still held): blocking the
partition for it took on-prem away from every job, and sent them to the cloud (a review). Refusals
that repeat (a drained partition whose nodes look free) still block it for a short while."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from adapters.base import CapacityError
from broker.burst import BurstInputs, decide
from broker.clock import Clock
from broker.dispatch.health import ONPREM_REFUSALS_TO_BLOCK, SiteHealth
from broker.model import Attempt, AttemptState, JobSpec, Offer, TenantId
from broker.policy import load_policy
from broker.policy.offers import static_offers
from tests.burst.conftest import write_policy

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


class Fixed(Clock):
    def now(self) -> datetime:
        return NOW

    def ticks(self) -> float:
        return NOW.timestamp()


def test_one_refusal_keeps_the_partition_and_repeated_ones_block_it(tmp_path: Path) -> None:
    policy = load_policy(write_policy(tmp_path))
    health = SiteHealth(lambda: policy, Fixed())
    offers: list[Offer] = [
        o.model_copy(update={"free": 7, "expected_wait_s": 0}) if o.site == "onprem" else o
        for o in static_offers(policy, read_at=NOW)
    ]
    onprem = next(o for o in offers if o.site == "onprem")
    spec = JobSpec.model_validate({
        "name": "j", "command": ["true"], "runtime_estimate": "1h", "max_wait": "2h",
        "resources": {"accelerators": {"count": 1, "any_of": ["A800", "A10"]}},
    })  # fmt: skip

    def decision_site() -> str | None:
        inputs = BurstInputs(now=NOW, queued_since=NOW, blocked=health.blocked(),
                             block_reasons=health.blocklist.reasons())  # fmt: skip
        d = decide(spec, TenantId("lab"), offers, policy, inputs)
        return d.offer.site if d.offer else None

    assert decision_site() == "onprem"
    attempt = Attempt.model_construct(id="a1", job_id="j1", site=onprem.site, offer=onprem, number=1,
                                      state=AttemptState.FAILED, token="t", created_at=NOW)  # fmt: skip
    race = CapacityError("onprem", "NoFreeAccelerators", "7 of 8 A800 free, need 8")
    health.record_failure(attempt, race)
    assert not health.blocked() and decision_site() == "onprem"
    for _ in range(ONPREM_REFUSALS_TO_BLOCK - 1):
        health.record_failure(attempt, race)
    assert onprem.key in health.blocked()
