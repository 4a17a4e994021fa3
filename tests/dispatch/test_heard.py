"""Silence and pending time on the monotonic clock give a restarted broker's attempts their grace.

The listing grace (EC2's lag) asked how long ago an attempt was created first in each poll; the
one cached start per attempt then answered the silence and pending questions too, which count
from this process's start when that is later: after a restart, a cloud attempt launched an hour
before read an hour of silence before its agent's next heartbeat could arrive (taken for lost,
its instance terminated), where a restart gives every attempt a whole heartbeat timeout.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from broker.clock import ManualClock
from broker.heard import Heard
from broker.model import Attempt, AttemptId, AttemptState, JobId, Offer, SiteId

LAUNCHED = datetime(2026, 12, 3, 1, 0, tzinfo=UTC)


def running_since(created: datetime) -> Attempt:
    offer = Offer(site=SiteId("aws-east"), instance_type="g5.xlarge", accelerator="A10G", count=1,
                  price_per_hour=1.0, region="us-east-1")
    return Attempt(id=AttemptId("j-1-a1"), job_id=JobId("j-1"), number=1, site=SiteId("aws-east"),
                   offer=offer, token="t" * 32, state=AttemptState.RUNNING, backend_id="i-1",
                   created_at=created, updated_at=created)


def test_a_restarted_brokers_attempts_count_silence_from_its_start_whatever_was_asked_first() -> None:
    restarted = LAUNCHED + timedelta(hours=1)
    clock = ManualClock(restarted)
    heard, attempt = Heard(clock), running_since(LAUNCHED)
    assert heard.age_s(attempt) == 3600  # (the listing grace's question, asked first in a poll)
    clock.advance(timedelta(seconds=10))
    assert heard.silent_s(attempt, restarted) == 10  # not 3,610: no heartbeat could come yet
    assert heard.pending_s(attempt, restarted) == 10
    assert heard.age_s(attempt) == 3610
    heard.beat(attempt.id)
    clock.advance(timedelta(seconds=5))
    assert heard.silent_s(attempt, restarted) == 5
