"""Which borrowed work is preempted for an owner's quota, and how the waste budget limits it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from broker.fairshare.reclaim import Running, borrowed, cheapest, victims

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def run(aid: str, tenant: str, units: int, age_s: float) -> Running:
    return Running(aid, tenant, units, NOW - timedelta(seconds=age_s))


RUNNING = [
    run("a-old", "a", 2, 600),  # a's quota of 2 covers its oldest attempt
    run("a-new", "a", 2, 60),  # borrowed
    run("b-1", "b", 1, 300),  # b has no quota: all borrowed
    run("b-2", "b", 1, 30),
    run("o-1", "owner", 2, 100),
]
QUOTAS = {"a": 2, "owner": 4}


def test_the_latest_attempts_beyond_quota_are_borrowed() -> None:
    assert {r.attempt_id for r in borrowed(RUNNING, QUOTAS)} == {"a-new", "b-1", "b-2"}


def test_most_over_share_tenant_first_then_youngest_attempt() -> None:
    got = victims(
        owner="owner",
        need=2,
        free=0,
        running=RUNNING,
        quotas=QUOTAS,
        ratios={"a": 1.2, "b": 2.0},
        waste_left=1e9,
        now=NOW,
    )
    assert [v.attempt_id for v in got] == ["b-2", "b-1"]
    assert got[0].waste == 30 and got[1].waste == 300


def test_nothing_is_preempted_when_free_capacity_is_enough_or_it_cannot_free_enough() -> None:
    common = {"owner": "owner", "running": RUNNING, "quotas": QUOTAS, "ratios": {}, "now": NOW}
    assert victims(need=2, free=2, waste_left=1e9, **common) == []  # type: ignore[arg-type]
    assert victims(need=9, free=0, waste_left=1e9, **common) == []  # type: ignore[arg-type]
    assert (
        victims(
            need=1,
            free=0,
            waste_left=1e9,
            running=[run("o-2", "owner", 4, 9)],
            owner="owner",
            quotas={},
            ratios={},
            now=NOW,
        )
        == []
    )  # never the owner's own work


def test_waste_budget_skips_attempts_that_ran_long() -> None:
    got = victims(
        owner="owner",
        need=2,
        free=0,
        running=RUNNING,
        quotas=QUOTAS,
        ratios={"a": 1.2, "b": 2.0},
        waste_left=200,
        now=NOW,
    )
    # b-1 ran 300 unit-seconds, over the budget; a-new (2 units x 60 s) fits, and frees the 2
    # alone, so b-2 (taken first, its tenant further over its share) is not preempted for nothing.
    assert [v.attempt_id for v in got] == ["a-new"]
    assert (
        victims(
            owner="owner", need=2, free=0, running=RUNNING, quotas=QUOTAS, ratios={}, waste_left=10, now=NOW
        )
        == []
    )


def test_nothing_is_preempted_beyond_the_owners_quota_on_the_partition() -> None:
    # The owner holds 4 here and runs 2: a 3-unit job is beyond its quota, a tenant without a
    # quota on the partition (it may hold one elsewhere) takes nothing back.
    common = {"running": RUNNING, "ratios": {}, "now": NOW, "free": 0, "waste_left": 1e9}
    assert victims(owner="owner", need=3, quotas=QUOTAS, **common) == []  # type: ignore[arg-type]
    assert victims(owner="c", need=1, quotas=QUOTAS, **common) == []  # type: ignore[arg-type]
    assert len(victims(owner="owner", need=2, quotas=QUOTAS, **common)) == 1  # type: ignore[arg-type]


def test_a_full_bucket_takes_the_least_costly_attempts_that_free_enough() -> None:
    chosen = cheapest(owner="owner", need=2, free=0, running=RUNNING, quotas=QUOTAS, now=NOW)
    # b-2 (30) then a-new (120), which alone frees the 2: b-2 is not lost for nothing.
    assert [(v.attempt_id, v.waste) for v in chosen] == [("a-new", 120.0)]


def test_no_attempt_is_preempted_that_the_others_chosen_make_unneeded() -> None:
    # Issue 14 review: the owner needs 3 of a full partition. Youngest first took the borrowed
    # 1-GPU job, then the 4-GPU one, which alone frees enough: the 1-GPU job lost its work for
    # nothing ('reclaiming 5 borrowed unit(s) ... preempting 2 job(s)' for a 3-GPU job).
    running = [run("o", "owner", 3, 900), run("b-4", "b", 4, 120), run("b-1", "b", 1, 60)]
    common = {"owner": "owner", "need": 3, "free": 0, "running": running, "quotas": {"owner": 6}, "now": NOW}
    got = victims(ratios={}, waste_left=1e9, **common)  # type: ignore[arg-type]
    assert [v.attempt_id for v in got] == ["b-4"]
    # The full bucket's least costly set is trimmed the same way.
    assert [v.attempt_id for v in cheapest(**common)] == ["b-4"]  # type: ignore[arg-type]


def test_wholly_borrowed_work_goes_before_an_attempt_straddling_its_tenants_quota() -> None:
    """Held-out review: lab's 2-unit attempt is half within lab's quota of 1; sme's two 1-unit
    attempts are wholly borrowed. Preempting lab's took lab below its own guarantee, though sme's
    freed as much. Both paths (within the bucket, and a full bucket's cheapest) now take sme's."""
    running = [run("lab-2u", "lab", 2, 300), run("sme-a", "sme", 1, 270), run("sme-b", "sme", 1, 240)]
    quotas = {"own": 3, "lab": 1}
    ratios = {"lab": 1.5, "sme": 0.75, "own": 0.0}
    kw = {"owner": "own", "need": 2, "free": 0, "running": running, "quotas": quotas, "now": NOW}
    got = victims(**kw, ratios=ratios, waste_left=1e9)  # type: ignore[arg-type]
    assert {v.attempt_id for v in got} == {"sme-a", "sme-b"}
    assert {v.attempt_id for v in cheapest(**kw)} == {"sme-a", "sme-b"}  # type: ignore[arg-type]


def test_an_attempt_straddling_its_quota_still_goes_when_nothing_else_frees_enough() -> None:
    """Whole attempts are preempted: when the straddling one is the only way to free the units,
    it is taken (lab keeps none of its quota of 1 for the owner's guaranteed 2)."""
    running = [run("lab-2u", "lab", 2, 300), run("sme-a", "sme", 1, 270)]
    quotas = {"own": 3, "lab": 1}
    kw = {"owner": "own", "need": 2, "free": 0, "running": running, "quotas": quotas, "now": NOW}
    got = victims(**kw, ratios={"lab": 1.5, "sme": 0.75}, waste_left=1e9)  # type: ignore[arg-type]
    assert [v.attempt_id for v in got] == ["lab-2u"]
