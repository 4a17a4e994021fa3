"""The fair-share ledger's decayed usage in the store (issue 14), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker.fairshare import Demand, Interval, UsageLedger
from broker.store import FairUsage, JobStore, PostgresStore, ReclaimBooking, ReclaimState, SqliteStore

Opener = Callable[[], JobStore]


@pytest.fixture(params=["sqlite", "postgres"])
def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens the same database again each call (a restart), on both engines."""
    if request.param == "sqlite":
        yield lambda: SqliteStore(tmp_path / "broker.db")
    else:
        dsn = request.getfixturevalue("pg_dsn")
        yield lambda: PostgresStore(dsn)


def test_saved_usage_is_read_back_after_reopening(reopen: Opener) -> None:
    store = reopen()
    assert store.load_fair_usage() is None
    store.save_fair_usage(FairUsage(3600.0, 1.5e9, {"pku-nlp": (8.5, 64.0, 512.0), "casia": (1.0, 2.0, 3.0)}))
    store.save_fair_usage(FairUsage(3600.0, 1.6e9, {"pku-nlp": (4.0, 32.0, 256.0)}))  # replaces
    store.close()
    again = reopen()
    kept = again.load_fair_usage()
    assert kept == FairUsage(3600.0, 1.6e9, {"pku-nlp": (4.0, 32.0, 256.0)})
    again.save_fair_usage(FairUsage(3600.0, 0.0, {}))
    assert again.load_fair_usage() is None
    again.close()


def test_a_restored_ledger_decays_on_as_if_never_stopped() -> None:
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    ledger = UsageLedger(3600.0)
    ledger.add(Interval("pku-nlp", Demand(8, 32, 256), t0, t0 + timedelta(hours=2)))
    state = ledger.state()
    assert state is not None
    restored = UsageLedger(3600.0)
    restored.restore(*state)
    later = t0 + timedelta(hours=5)
    assert restored.history(later) == ledger.history(later)
    assert restored.history(later)["pku-nlp"].accelerators > 0


def test_the_reclaim_budget_and_bookings_are_read_back_after_reopening(reopen: Opener) -> None:
    store = reopen()
    assert store.load_reclaim_state() == ReclaimState()
    booked = ReclaimBooking("a-1", "lab/a800", 2, "j-owner", 1.5e9, 1.5e9 + 200.5, False, beside=1)
    store.save_reclaim_state(ReclaimState({"lab/a800": (-3.5, 1.5e9), "lab/h800": (12.0, 1.5e9)}, (booked,)))
    stopped = ReclaimBooking("a-2", "lab/h800", 1, "j-other", 1.6e9, 1.6e9 + 10, True)
    state = ReclaimState({"lab/a800": (-1.0, 1.6e9)}, (booked, stopped))
    store.save_reclaim_state(state)  # replaces
    store.close()
    again = reopen()
    assert again.load_reclaim_state() == state
    again.save_reclaim_state(ReclaimState({"lab/a800": (-1.0, 1.6e9)}))  # a booking over: gone
    assert again.load_reclaim_state().bookings == ()
    again.close()
