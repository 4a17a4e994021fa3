"""A silent attempt whose console cannot be read yet (throttled) waits for the next poll, but not
for ever: past twice the heartbeat timeout of silence it is lost (a review: a console throttled
for hours kept a silent instance running and billed)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from adapters.base import TransientError
from broker.dispatch.silence import silent_attempt
from broker.model import Attempt, AttemptState, AttemptStatus, Offer, SiteId

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


class ThrottledConsole:
    """A cloud whose console reads are throttled (`adapters.base.KeptResult`)."""

    site = SiteId("c")

    def kept_result(self, backend_id: str) -> AttemptStatus | None:
        raise TransientError(self.site, "RequestLimitExceeded", "slow down")


def test_a_throttled_console_delays_the_loss_but_not_for_ever() -> None:
    offer = Offer(site=SiteId("c"), instance_type="t", accelerator=None, count=0, price_per_hour=1)
    attempt = Attempt.model_construct(
        id="a1", job_id="j1", site=SiteId("c"), offer=offer, number=1, state=AttemptState.RUNNING,
        token="t", created_at=NOW, backend_id="i-1",
    )  # fmt: skip
    adapter = ThrottledConsole()
    with pytest.raises(TransientError):
        asyncio.run(silent_attempt(adapter, attempt, 400, 300))  # type: ignore[arg-type]
    lost = asyncio.run(silent_attempt(adapter, attempt, 601, 300))  # type: ignore[arg-type]
    assert lost.state == AttemptState.LOST and "601s" in lost.message
