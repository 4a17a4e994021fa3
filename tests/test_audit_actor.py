"""Who the audit trail says did a cancel (held-out review of issue 12)."""

from __future__ import annotations

from datetime import UTC, datetime

from broker.audit import event_to_proto
from broker.model import JobEvent, JobId, JobState, TenantId

NOW = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)


def cancel(message: str, **data: str) -> JobEvent:
    return JobEvent(job_id=JobId("j-1"), seq=3, time=NOW, kind="cancelled", state=JobState.CANCELLED,
                    message=message, data=data)


def test_a_cancel_at_the_backend_is_the_backends_not_the_brokers() -> None:
    """An operator's `scancel` of a broker job read `by broker`: the broker did not cancel it."""
    assert event_to_proto(TenantId("lab"), cancel("cancelled at the backend")).actor == "backend"
    assert event_to_proto(TenantId("lab"), cancel("cancelled", by="alice")).actor == "alice"
    assert event_to_proto(TenantId("lab"), cancel("cancelled")).actor == "lab"
