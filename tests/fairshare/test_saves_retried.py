"""Fair-share usage and reclaim's budget that a store refused are kept in memory, logged once per
refusal, and saved by the next pass; unchanged ones are not written again. The store here is a
real SQLite store refusing writes as it does for a scheduler that lost leadership (fenced out)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker.fair_queue import FairQueue
from broker.fairshare import Demand, Interval
from broker.policy import load_policy_text
from broker.store import ReclaimState, SqliteStore
from tests.burst.conftest import POLICY, write_policy

T0 = datetime(2026, 12, 1, tzinfo=UTC)
LATER = T0 + timedelta(hours=6)
FENCED = "fenced at epoch 7, but epoch 0 leads now"


def test_refused_saves_are_logged_and_retried_and_unchanged_state_is_not_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_policy(tmp_path, POLICY)
    policy = load_policy_text(path.read_text(), str(path))
    store = SqliteStore(tmp_path / "broker.db")
    try:
        fq = FairQueue()
        fq.observe(policy, [], T0, store)  # reads what the store kept: nothing
        fq.book.ledger.add(Interval("flooder", Demand(8, 64, 512), T0, LATER))
        fq.reclaimer.restore(ReclaimState({"onprem/a800": (2.5, LATER.timestamp())}))

        store.set_fence(7)  # another scheduler leads: every fenced write is refused
        with caplog.at_level(logging.WARNING, "broker.fair_queue"):
            fq.observe(policy, [], LATER, store)
        assert [r.getMessage() for r in caplog.records] == [
            f"fair-share usage not saved: {FENCED}",
            f"reclaim budget not saved: {FENCED}",
        ]
        assert store.load_fair_usage() is None and store.load_reclaim_state() == ReclaimState()

        caplog.clear()
        store.set_fence(None)
        with caplog.at_level(logging.WARNING, "broker.fair_queue"):
            fq.observe(policy, [], LATER, store)  # the next pass saves both
        assert caplog.records == []
        usage = store.load_fair_usage()
        assert usage is not None and set(usage.sums) == {"flooder"}
        assert store.load_reclaim_state().levels == {"onprem/a800": (2.5, LATER.timestamp())}

        store.set_fence(7)
        with caplog.at_level(logging.WARNING, "broker.fair_queue"):
            fq.observe(policy, [], LATER, store)  # nothing changed: nothing written, nothing refused
        assert caplog.records == []
    finally:
        store.close()
