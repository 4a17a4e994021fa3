"""A silent attempt whose console cannot be read yet (throttled) waits for the next poll, but not
for ever: past twice the heartbeat timeout of silence it is lost (a review: a console throttled
for hours kept a silent instance running and billed). A silent gang is read rank by rank."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.base import TransientError
from broker.dispatch.gang import RANK_EXIT
from broker.dispatch.silence import silent_attempt
from broker.model import (
    Attempt,
    AttemptState,
    AttemptStatus,
    JobSpec,
    JobState,
    Offer,
    Resources,
    SiteId,
    TenantId,
)
from broker.store import SqliteStore, Submission

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
OFFER = Offer(site=SiteId("c"), instance_type="t", accelerator=None, count=0, price_per_hour=1)


class ThrottledConsole:
    """A cloud whose console reads are throttled (`adapters.base.KeptResult`)."""

    site = SiteId("c")

    def kept_result(self, backend_id: str) -> AttemptStatus | None:
        raise TransientError(self.site, "RequestLimitExceeded", "slow down")


class Consoles:
    """A cloud whose instances' consoles say what `kept` holds (a TransientError: throttled)."""

    site = SiteId("c")

    def __init__(self, kept: dict[str, AttemptStatus | TransientError | None]) -> None:
        self.kept = kept
        self.reads: list[str] = []

    def kept_result(self, backend_id: str) -> AttemptStatus | None:
        self.reads.append(backend_id)
        found = self.kept[backend_id]
        if isinstance(found, TransientError):
            raise found
        return found


def ended(code: int) -> AttemptStatus:
    state = AttemptState.SUCCEEDED if code == 0 else AttemptState.FAILED
    return AttemptStatus(state=state, exit_code=code, log_tail=f"ended {code}\n", message=f"exit code {code}")


def gang_attempt(store: SqliteStore) -> Attempt:
    """A 2-node gang's attempt, running as `gang:pg-1:i-0,i-1`."""
    spec = JobSpec(
        name="gang", command=("true",), runtime_estimate=timedelta(minutes=5),
        resources=Resources(nodes=2),
    )  # fmt: skip
    [(job, _)] = store.submit(TenantId("lab"), [Submission(spec=spec)], NOW)
    store.transition(job.id, JobState.PLACING, NOW, kind="placed", site="c")
    attempt = store.create_attempt(job.id, OFFER.site, OFFER, "tok-1", NOW)
    return store.update_attempt(attempt.id, NOW, state=AttemptState.RUNNING, backend_id="gang:pg-1:i-0,i-1")


def silent(adapter: object, attempt: Attempt, store: SqliteStore, silent_s: float = 400) -> AttemptStatus:
    return asyncio.run(silent_attempt(adapter, attempt, silent_s, 300, store=store, now=NOW))  # type: ignore[arg-type]


def test_a_throttled_console_delays_the_loss_but_not_for_ever(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "broker.db")
    attempt = Attempt.model_construct(
        id="a1", job_id="j1", site=SiteId("c"), offer=OFFER, number=1, state=AttemptState.RUNNING,
        token="t", created_at=NOW, backend_id="i-1",
    )  # fmt: skip
    adapter = ThrottledConsole()
    with pytest.raises(TransientError):
        silent(adapter, attempt, store, 400)
    lost = silent(adapter, attempt, store, 601)
    assert lost.state == AttemptState.LOST and "601s" in lost.message


def test_a_gang_rank_that_failed_fails_the_gang_though_another_rank_has_no_result(tmp_path: Path) -> None:
    """As its report would have: rank 1's failure ends the gang, rank 0 still running or not."""
    store = SqliteStore(tmp_path / "broker.db")
    attempt = gang_attempt(store)
    status = silent(Consoles({"i-0": None, "i-1": ended(7)}), attempt, store)
    assert status.state == AttemptState.FAILED and status.exit_code == 7
    assert status.message.startswith("rank 1 of 2: exit code 7"), status.message
    kept = [e for e in store.events_after(attempt.job_id, 0) if e.kind == RANK_EXIT]
    assert [(e.data["rank"], e.data["exit_code"]) for e in kept] == [(1, 7)]
    assert "console" in kept[0].message


def test_a_gang_with_a_rank_without_result_is_lost(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "broker.db")
    attempt = gang_attempt(store)
    status = silent(Consoles({"i-0": ended(0), "i-1": None}), attempt, store)
    assert status.state == AttemptState.LOST and "400s" in status.message


def test_a_throttled_rank_is_read_again_and_a_read_rank_is_not(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "broker.db")
    attempt = gang_attempt(store)
    consoles = Consoles({"i-0": ended(0), "i-1": TransientError(SiteId("c"), "Throttling", "slow down")})
    with pytest.raises(TransientError):
        silent(consoles, attempt, store)
    consoles.kept["i-1"] = ended(0)
    status = silent(consoles, attempt, store)
    assert status.state == AttemptState.SUCCEEDED and status.exit_code == 0
    assert status.message.startswith("all 2 ranks ended; rank 0: exit code 0"), status.message
    assert consoles.reads == ["i-0", "i-1", "i-1"]  # rank 0's exit was kept by the first pass
