"""The per-principal limit on refused actions written to the audit trail (a real SQLite store,
an injected clock): past the minute's share nothing is written, and the count of what was not
comes as one entry when that principal's next minute opens; other principals keep their share."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from broker.auth import Principal, Role
from broker.clock import ManualClock
from broker.model import TenantId
from broker.refused_calls import RefusedCalls
from broker.store import AuditFilter, SqliteStore


def test_a_flood_writes_its_share_then_one_count(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "broker.db")
    clock = ManualClock(datetime(2026, 3, 1, 8, 0, tzinfo=UTC))
    calls = RefusedCalls(store, clock, per_minute=3)
    flooder = Principal(TenantId("team-a"), Role.TENANT, "bot")
    asked: list[str] = []

    def why() -> str:
        asked.append("x")
        return "no such job"

    try:
        for _ in range(8):
            calls.record(flooder, "cancel", "j-1", "NOT_FOUND", why)
        calls.record(Principal(TenantId("team-b")), "drain", "local", "PERMISSION_DENIED", "only operators")
        assert len(asked) == 3  # (a reason costing a read is read only for what is written)
        assert [(a.tenant, a.action) for a in store.refused_actions(AuditFilter())] == [
            ("team-a", "cancel")] * 3 + [("team-b", "drain")]
        clock.advance(timedelta(seconds=61))
        calls.record(flooder, "drain", "local", "PERMISSION_DENIED", "only operators")
        *_, count, drain = store.refused_actions(AuditFilter(tenant="team-a"))
        assert (count.action, count.by) == ("unrecorded", "bot")
        assert count.reason == ("5 more refused call(s) by bot in the minute from 2026-03-01 08:00:00 not "
                                "recorded (at most 3 a minute)")
        assert (drain.action, drain.target) == ("drain", "local")
    finally:
        store.close()
