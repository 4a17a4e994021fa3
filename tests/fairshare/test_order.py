"""The fair-share order, table-driven: fixed tenants, usage and queues; the expected order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from broker.fairshare import Demand, QueuedWork, Share, TenantState, order
from broker.model import Priority

T0 = datetime(2026, 12, 1, tzinfo=UTC)
CAP = Demand(accelerators=16, cpus=256, memory_gb=2048)
P = "onprem/a800"


def job(
    jid: str,
    tenant: str,
    *,
    gpus: int = 1,
    cpus: float = 4,
    mem: float = 32,
    prio: Priority = Priority.NORMAL,
    age_s: int = 0,
    parts: tuple[str, ...] = (P,),
) -> QueuedWork:
    return QueuedWork(
        job_id=jid,
        tenant=tenant,
        priority=prio,
        created_at=T0 - timedelta(seconds=age_s),
        demand=Demand(gpus, cpus, mem),
        units=gpus,
        partitions=parts,
    )


def state(
    weight: float = 1.0,
    *,
    gpus: float = 0,
    cpus: float = 0,
    quota: int = 0,
    in_use: int = 0,
    borrow: bool = True,
) -> TenantState:
    return TenantState(
        share=Share(weight=weight, quota={P: quota} if quota else {}, may_borrow=borrow),
        usage=Demand(gpus, cpus, cpus * 8),
        in_use={P: in_use} if in_use else {},
    )


CASES = [
    pytest.param(
        # The flood: tenant a already holds 12 of 16 cards and queued first; b's one job goes first.
        [job("a1", "a", age_s=30), job("a2", "a", age_s=29), job("b1", "b", age_s=1)],
        {"a": state(gpus=12), "b": state()},
        ["b1", "a1", "a2"],
        id="small-tenant-ahead-of-flooder",
    ),
    pytest.param(
        # Equal usage: the heavier weight has the lower weighted share.
        [job("a1", "a"), job("b1", "b")],
        {"a": state(1, gpus=4), "b": state(2, gpus=4)},
        ["b1", "a1"],
        id="weight-breaks-equal-usage",
    ),
    pytest.param(
        # Within a tenant: priority first, then age.
        [
            job("old", "a", age_s=100),
            job("hi", "a", prio=Priority.HIGH),
            job("lo", "a", prio=Priority.LOW, age_s=500),
        ],
        {"a": state()},
        ["hi", "old", "lo"],
        id="priority-then-age-within-tenant",
    ),
    pytest.param(
        # Priority never jumps tenants: b's low job is ahead of a's high job when b uses less.
        [job("a-hi", "a", prio=Priority.HIGH), job("b-lo", "b", prio=Priority.LOW)],
        {"a": state(gpus=8), "b": state(gpus=1)},
        ["b-lo", "a-hi"],
        id="priority-does-not-cross-tenants",
    ),
    pytest.param(
        # Within quota goes ahead of borrowed work, even of a tenant with lower usage.
        [job("b1", "b"), job("a1", "a", gpus=2)],
        {"a": state(gpus=10, quota=8, in_use=6), "b": state()},
        ["a1", "b1"],
        id="quota-ahead-of-borrowed",
    ),
    pytest.param(
        # Only the part of a tenant's queue that fits its remaining quota is in quota.
        [job("a1", "a", gpus=2, age_s=3), job("a2", "a", gpus=2, age_s=2), job("b1", "b", age_s=1)],
        {"a": state(gpus=6, quota=8, in_use=6), "b": state()},
        ["a1", "b1", "a2"],
        id="quota-runs-out",
    ),
    pytest.param(
        # Accelerators dominate: a CPU-heavy tenant with no cards vs one holding cards.
        [job("gpu", "g"), job("cpu", "c", gpus=0, cpus=8, parts=("onprem/cpu",))],
        {"g": state(gpus=8), "c": state(cpus=64)},
        ["cpu", "gpu"],
        id="dominant-share-across-resources",
    ),
    pytest.param(
        # Turns interleave: each job put in order is charged to its tenant.
        [
            job("a1", "a", gpus=4, age_s=4),
            job("a2", "a", gpus=4, age_s=3),
            job("b1", "b", gpus=4, age_s=2),
            job("b2", "b", gpus=4, age_s=1),
        ],
        {},
        ["a1", "b1", "a2", "b2"],
        id="interleave-equal-tenants",
    ),
    pytest.param(
        # Weight 3 vs 1 from zero usage: three of a's jobs for each one of b's.
        [
            *(job(f"a{i}", "a", age_s=100 - i) for i in range(6)),
            *(job(f"b{i}", "b", age_s=50 - i) for i in range(2)),
        ],
        {"a": state(3), "b": state(1)},
        ["a0", "b0", "a1", "a2", "a3", "b1", "a4", "a5"],
        id="weights-set-the-interleaving",
    ),
]


@pytest.mark.parametrize(("work", "tenants", "expected"), CASES)
def test_order(work: list[QueuedWork], tenants: dict[str, TenantState], expected: list[str]) -> None:
    got = order(work, tenants, CAP, charge=1.0)
    assert [s.job_id for s in got] == expected
    assert [s.position for s in got] == list(range(1, len(got) + 1))


def test_standing_text_names_position_tenant_and_share() -> None:
    got = order(
        [job("a1", "a"), job("a2", "a"), job("b1", "b")],
        {"a": state(gpus=12), "b": state(gpus=2)},
        CAP,
    )
    a2 = next(s for s in got if s.job_id == "a2")
    # a holds 12/16 = 0.75 of the cards and is entitled to half: 1.5x its share.
    assert a2.text() == "3rd in tenant order (borrowed); tenant a at 1.5× its share"
    assert a2.tenant_position == 2


def test_tenant_that_may_not_borrow_keeps_only_its_quota_on_prem() -> None:
    got = order(
        [job("a1", "a", gpus=2, age_s=2), job("a2", "a", gpus=2, age_s=1)],
        {"a": state(quota=2, borrow=False)},
        CAP,
    )
    assert [(s.job_id, s.in_quota, s.may_run_onprem) for s in got] == [
        ("a1", True, True),
        ("a2", False, False),
    ]
