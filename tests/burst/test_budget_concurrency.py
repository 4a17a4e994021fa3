"""Budgets are never overspent, however many bursts race for the last of the money."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.model import AttemptId, JobId, SiteId, TenantId
from broker.store import SpendEntry, SqliteStore


@settings(max_examples=25, deadline=None)
@given(
    budget=st.floats(min_value=0, max_value=500),
    cap=st.one_of(st.none(), st.floats(min_value=0, max_value=800)),
    costs=st.lists(st.floats(min_value=0.01, max_value=120), min_size=1, max_size=40),
    tenants=st.lists(st.sampled_from(["a", "b"]), min_size=40, max_size=40),
)
def test_concurrent_reservations_never_exceed_budget_or_cap(
    tmp_path_factory: object, budget: float, cap: float | None, costs: list[float], tenants: list[str]
) -> None:
    folder = Path(str(tmp_path_factory.mktemp("spend")))  # type: ignore[attr-defined]
    store = SqliteStore(folder / "broker.db")
    barrier = threading.Barrier(len(costs))

    def burst(i: int, cost: float) -> None:
        barrier.wait()
        store.reserve_spend(
            SpendEntry(
                tenant=TenantId(tenants[i]),
                site=SiteId("cloud"),
                job_id=JobId(f"j{i}"),
                attempt_id=AttemptId(f"j{i}-a1"),
                month="2026-11",
                reserved=cost,
            ),
            tenant_limit=budget,
            global_limit=cap,
        )

    threads = [threading.Thread(target=burst, args=(i, c)) for i, c in enumerate(costs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entries = store.spend_entries("2026-11")
    for tenant in ("a", "b"):
        spent = sum(e.reserved for e in entries if e.tenant == tenant)
        assert spent <= budget + 1e-6
    if cap is not None:
        assert sum(e.reserved for e in entries) <= cap + 1e-6
    # Everything that fitted was taken: a refused burst would really have overspent.
    assert len(entries) >= 1 or min(costs) > min(budget, cap if cap is not None else budget)
    store.close()


def test_settling_turns_reservation_into_actual_spend(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "broker.db")
    first = SpendEntry(
        tenant=TenantId("a"),
        site=SiteId("cloud"),
        job_id=JobId("j1"),
        attempt_id=AttemptId("j1-a1"),
        month="2026-11",
        reserved=50.0,
    )
    second = replace(first, job_id=JobId("j2"), attempt_id=AttemptId("j2-a1"), reserved=20.0)
    assert store.reserve_spend(first, tenant_limit=60, global_limit=None)
    assert not store.reserve_spend(second, tenant_limit=60, global_limit=None)  # 70 > 60
    store.settle_spend(AttemptId("j1-a1"), spent=12.5, voucher=0.0)  # it ran for a quarter of its estimate
    assert store.reserve_spend(second, tenant_limit=60, global_limit=None)  # 32.5 <= 60
    settled = {e.attempt_id: e for e in store.spend_entries("2026-11")}
    assert settled[AttemptId("j1-a1")].settled and settled[AttemptId("j1-a1")].spent == 12.5
    store.close()
