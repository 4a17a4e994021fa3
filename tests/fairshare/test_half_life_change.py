"""Past use outlives a change of `fair_share.half_life` (issue 14 review): a reload or a restart
with another half-life started an empty ledger, so a tenant that had held the partition for
hours was forgiven all of it at once and went ahead of tenants that had used nothing."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker.fair_queue import FairQueue
from broker.fairshare import Demand, Interval
from broker.fairshare.book import FairShareBook
from broker.policy import load_policy_text
from broker.store import FairUsage, SqliteStore
from tests.burst.conftest import POLICY, write_policy

T0 = datetime(2026, 12, 1, tzinfo=UTC)
LATER = T0 + timedelta(hours=6)


def test_a_new_half_life_keeps_the_tenants_history() -> None:
    book = FairShareBook(86400.0)
    book.ledger.add(Interval("flooder", Demand(8, 64, 512), T0, LATER))
    before = book.ledger.history(LATER)["flooder"]
    book.set_half_life(3600.0)  # a reload from 1d to 1h
    after = book.ledger.history(LATER)["flooder"]
    assert before.accelerators > 0 and after.accelerators == pytest.approx(before.accelerators)
    # From then on it fades by the new half-life.
    faded = book.ledger.history(LATER + timedelta(hours=1))["flooder"].accelerators
    assert faded == pytest.approx(before.accelerators / 2)
    book.set_half_life(0.0)  # only what runs now counts
    assert book.ledger.history(LATER) == {}


def test_a_restart_with_another_half_life_keeps_the_stored_history(tmp_path: Path) -> None:
    path = write_policy(tmp_path, POLICY)  # fair_share.half_life: the schema default, 1d
    policy = load_policy_text(path.read_text(), str(path))
    store = SqliteStore(tmp_path / "broker.db")
    try:
        # What a broker running with a 1 h half-life kept: 4 accelerators held on average.
        held = 4 * 3600 / math.log(2)
        store.save_fair_usage(FairUsage(3600.0, LATER.timestamp(), {"flooder": (held, 0, 0)}))
        fq = FairQueue()
        fq.observe(policy, [], LATER, store)
        history = fq.book.ledger.history(LATER)
        assert history["flooder"].accelerators == pytest.approx(4.0)
    finally:
        store.close()
