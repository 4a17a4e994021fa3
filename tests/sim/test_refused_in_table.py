"""`szb simulate`'s table and summary.md count the jobs the policy refused: before, a trace whose
jobs no offer could take (an accelerator no site offers, a job larger than any partition or
instance) read "jobs 0 ... SLO 1.000" with nothing saying why, the count only in the JSON."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from broker.cli import main
from tests.sim.conftest import table_row

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "configs" / "policy-sim.yaml"

TRACE = """submit_time,runtime,accelerator,count,tenant
0,1h,A800,1,pku-nlp
10,1h,B200,1,pku-nlp
20,1h,A800,1024,zhipu-sme
"""


def test_the_table_and_the_summary_count_refused_jobs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text(TRACE)
    argv = ["simulate", "--trace", str(trace), "--policy", str(POLICY), "--baselines", "onprem-only"]
    assert main([*argv, "-o", "json"]) == 0
    policy = json.loads(capsys.readouterr().out)["strategies"]["policy"]
    assert (policy["jobs"], policy["rejected"]) == (1, 2)
    assert main([*argv, "--report", str(tmp_path / "rep")]) == 0
    for text, sep in ((capsys.readouterr().out, "┃"), ((tmp_path / "rep" / "summary.md").read_text(), "|")):
        if sep == "┃":  # (rich draws the header with ┃ and the rows with │)
            text = text.replace("│", "┃")
        for strategy in ("policy", "onprem-only"):
            row = table_row(text, sep, strategy)
            assert (row["jobs"], row["refused"]) == ("1", "2"), text


def test_a_report_of_jobs_all_refused_draws_without_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No job started, so the wait CDF has no line: matplotlib warned on stderr that its legend
    had nothing to show, in the middle of the command's output."""
    trace = tmp_path / "trace.csv"
    trace.write_text("submit_time,runtime,accelerator,count,tenant\n0,1h,B200,1,pku-nlp\n")
    argv = ["simulate", "--trace", str(trace), "--policy", str(POLICY), "--report", str(tmp_path / "rep")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(argv) == 0
    assert [str(w.message) for w in caught] == []
    assert table_row(capsys.readouterr().out.replace("│", "┃"), "┃", "policy")["refused"] == "1"
    assert (tmp_path / "rep" / "wait_cdf.png").stat().st_size > 1000


def test_the_summary_says_what_the_bound_assumes_as_the_table_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """summary.md read "every job starting within its max_wait: - CNY" both when no schedule
    starts every job on time and when the bound was skipped; the table's footer tells them apart."""
    from tests.sim.conftest import tiny_policy

    tiny_policy(tmp_path, gpus=4)
    trace = tmp_path / "trace.csv"  # two 4-GPU jobs at once, neither may wait: one is late in any schedule
    trace.write_text(
        "submit_time,runtime,accelerator,count,tenant,max_wait\n0,1h,A800,4,t1,0\n0,1h,A800,4,t1,0\n"
    )
    argv = ["simulate", "--trace", str(trace), "--policy", str(tmp_path / "policy.yaml")]
    assert main([*argv, "--report", str(tmp_path / "none")]) == 0
    assert main([*argv, "--no-lower-bound", "--report", str(tmp_path / "skipped")]) == 0
    capsys.readouterr()
    none = (tmp_path / "none" / "summary.md").read_text()
    assert "max_wait: none: no schedule starts every job on time." in none, none
    skipped = (tmp_path / "skipped" / "summary.md").read_text()
    assert "max_wait: not computed." in skipped, skipped


def test_the_refusals_say_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A held-out trace under another policy read "refused 21" with no reason anywhere (`szb policy
    replay` names the rule for each refusal; the simulator only counted them)."""
    trace = tmp_path / "trace.csv"
    trace.write_text(TRACE + "30,1h,A800,1024,zhipu-sme\n")
    argv = ["simulate", "--trace", str(trace), "--policy", str(POLICY), "--no-lower-bound"]
    assert main([*argv, "-o", "json"]) == 0
    refusals = json.loads(capsys.readouterr().out)["strategies"]["policy"]["refusals"]
    assert sum(refusals.values()) == 3, refusals
    assert all("hardware.fit" in rules for rules in refusals), refusals  # (the rules, by id)
    assert main([*argv, "--report", str(tmp_path / "rep")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    summary = " ".join((tmp_path / "rep" / "summary.md").read_text().split())
    for reason, n in refusals.items():
        assert f"{reason} ({n})" in out and f"{reason} ({n})" in summary, (reason, out)


def test_a_refusal_is_named_by_what_blocks_the_offers_the_job_fits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Placement stops at an offer's first failing rule, and the export rule comes before the
    hardware fit: a 64-GPU H100 job, which no offer carries, was refused "us-export-3a090 +
    hardware.fit" for the 1-GPU H100 instances the rule rejects (it read as a licence matter)."""
    trace = tmp_path / "trace.csv"
    trace.write_text("submit_time,runtime,accelerator,count,tenant\n0,1h,H100,1,pku-nlp\n10,1h,H100,64,pku-nlp\n")
    argv = ["simulate", "--trace", str(trace), "--policy", str(POLICY), "--no-lower-bound", "-o", "json"]
    assert main(argv) == 0
    refusals = json.loads(capsys.readouterr().out)["strategies"]["policy"]["refusals"]
    # The 1-GPU job fits H100 instances the export rule rejects (pku-nlp is in D:5); the 64-GPU one
    # fits none.
    assert refusals == {"us-export-3a090": 1, "hardware.fit": 1}, refusals


def test_one_set_of_rules_is_counted_once_whatever_order_each_job_met_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rules are listed commonest first per job, and that order varies with the job's shape: one
    set was counted twice, as `hardware.fit + partner-no-onprem-a800: 19` and
    `partner-no-onprem-a800 + hardware.fit: 3`."""
    rows = [f"{i * 10},1h,{acc},{n},sg-partner" for i, (acc, n) in enumerate(
        [("A800", 1), ("A800", 8), ("A800|H800", 2), ("A800", 1024), ("A800|T4", 4), ("A800", 3)]
    )]  # fmt: skip
    trace = tmp_path / "trace.csv"
    trace.write_text("submit_time,runtime,accelerator,count,tenant\n" + "\n".join(rows) + "\n")
    argv = ["simulate", "--trace", str(trace), "--policy", str(POLICY), "--no-lower-bound", "-o", "json"]
    assert main(argv) == 0
    refusals = json.loads(capsys.readouterr().out)["strategies"]["policy"]["refusals"]
    sets = [frozenset(key.split(" + ")) for key in refusals]
    assert len(sets) == len(set(sets)), refusals
    assert all(key.split(" + ") == sorted(key.split(" + ")) for key in refusals), refusals


def test_a_cost_of_a_few_units_keeps_its_cents_beside_the_bound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run of a few CNY read "4" in the cost column beside a bound of 3.90."""
    trace = tmp_path / "trace.csv"
    trace.write_text("submit_time,runtime,accelerator,count,tenant\n0,1h,A800,1,pku-nlp\n")
    assert main(["simulate", "--trace", str(trace), "--policy", str(POLICY), "--baselines", "none"]) == 0
    out = capsys.readouterr().out.replace("│", "┃")
    cost = table_row(out, "┃", "policy")["cost CNY"]
    assert "." in cost and float(cost) < 100, cost
