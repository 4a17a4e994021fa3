"""`bench/placement.py --json` reports cold, cold-regroup, warm-rules and repeated figures side by side with
CPU time and the machine's load average (issue 15, "Cold decisions"); a small run of it."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_bench_json_has_every_mode_with_wall_and_cpu_quantiles_and_the_load() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench/placement.py"),
            "--json",
            "--sizes",
            "452,1000",
            "--decisions",
            "9",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    report = json.loads(out.stdout)
    assert report["headline"] == "cold"
    assert report["machine"]["cpus"] >= 1
    assert len(report["machine"]["load_average_1_5_15m"]["before"]) == 3
    assert [r["offers"] for r in report["results"]] == [452, 1000]  # the README's sizes
    for row in report["results"]:
        assert row["rules"] == 20
        for mode in ("cold", "cold_regroup", "warm_rules", "repeated"):
            figures = row[mode]
            assert 0 < figures["p50_ms"] <= figures["p99_ms"]
            assert 0 <= figures["cpu_p50_ms"] <= figures["cpu_p99_ms"]
            assert figures["decisions_per_s"] > 0
            assert set(figures["gc_collections"]) == {"0", "1", "2"}
            # the first decision of each mode decided again on the plain CEL path: the same verdicts
            assert (figures["checked_against_plain_cel"], figures["differing_from_plain_cel"]) == (1, 0)
            tail = figures["tail"]  # what the p99 cases are: shapes, and how many ran a collection
            assert tail["decisions"] == sum(tail["shapes"].values()) >= 1
            assert 0 <= tail["with_gc"] <= tail["decisions"]
            assert set(tail["shapes"]) <= set(tail["shape_cpu_p50_p99_ms"])
            for p50, p99 in tail["shape_cpu_p50_p99_ms"].values():
                assert 0 <= p50 <= p99


def test_bench_modes_flag_measures_only_the_modes_named() -> None:
    """`--modes cold,cold_regroup,repeated` (the README's 10,000-offer row), on a small size."""
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench/placement.py"),
            "--json",
            "--sizes",
            "100",
            "--decisions",
            "5",
            "--modes",
            "cold,cold_regroup,repeated",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    (row,) = json.loads(out.stdout)["results"]
    assert {"cold", "cold_regroup", "repeated"} <= set(row)
    assert "warm_rules" not in row


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--sizes", "abc"], "--sizes: 'abc' is not a number of offers"),
        (["--sizes", "100,"], "--sizes: '' is not a number of offers"),
        (["--sizes", "0"], "--sizes: 0 offers"),
        (["--sizes", "-5"], "--sizes: -5 offers"),
        (["--decisions", "0"], "--decisions: must be >= 1"),
    ],
)
def test_bench_refuses_sizes_and_counts_it_cannot_measure(args: list[str], said: str) -> None:
    """A traceback before (`int('abc')`, the median of no decisions), or silently a row measured
    against 0 offers for a size of 0 or -5."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench/placement.py"), "--json", "--decisions", "5", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2 and out.stdout == ""
    assert "Traceback" not in out.stderr and said in out.stderr, out.stderr


def test_cold_forgets_what_the_rules_derived_and_warm_rules_keeps_it() -> None:
    """Cold means nothing about the job or the rules is cached: the rules' value classes and the
    market parts' classes and cells went too (review 58: they stayed, so cold was partly warm)."""
    from bench.placement import JOBS, forget, load_policy, make_offers, write_policy
    from broker.model import JobSpec, TenantId
    from broker.placement import PlacementContext, place
    from broker.placement.prepared import snapshot

    with tempfile.TemporaryDirectory() as tmp:
        policy = load_policy(write_policy(Path(tmp)))
    offers = make_offers(policy, 300, random.Random(7))
    place(JobSpec.model_validate(JOBS[1]), TenantId("t-sme"), offers, policy, PlacementContext())
    parts = [g.part(spot, policy) for g in snapshot(offers, policy).groups for spot in (None, True, False)]
    for part in parts:  # what a decision derives on a part: classes by some reads, a cell by count
        part.classes("probe", lambda o: o.spot)
        part.at_least(2)

    def kept(mode: str) -> tuple[bool, bool, bool]:
        """(the rules' value classes, every part's classes, every part's cells) kept over `forget`."""
        classes_known = bool(policy.rules.classes.known)
        cells = [part.at_least(2) for part in parts]
        forget(policy, offers, mode=mode, how="same")
        projected: list[object] = []
        for part in parts:
            part.classes("probe", projected.append)
        same_cells = all(part.at_least(2) is cell for part, cell in zip(parts, cells, strict=True))
        return classes_known and bool(policy.rules.classes.known), not projected, same_cells

    assert policy.rules.classes.known  # the decision classified sites and accelerators for its rules
    assert kept("warm_rules") == (True, True, True)
    assert kept("cold") == (False, False, False)
