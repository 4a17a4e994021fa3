"""The simulator's accounting on a hand-computed three-job trace."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from broker.policy import Policy
from broker.sim.jobs import build_jobs
from broker.sim.run import simulate
from broker.sim.scenario import Scenario
from broker.sim.traces import TraceJob, read_trace, write_csv
from tests.sim.conftest import tiny_policy

THREE = [
    # A runs on the one on-prem GPU at once: 1 h x 2 CNY.
    TraceJob("a", 0, 3600, count=1, accelerators=("A800",), tenant="t1"),
    # B at 60 s: on-prem would wait 3540 s > 30 min, so it bursts (no hysteresis): 1 h x 10 CNY,
    # up after the fixed 60 s of provisioning.
    TraceJob("b", 60, 3600, count=1, accelerators=("A800",), tenant="t1"),
    # C at 120 s may wait 2 h: on-prem frees at 3600 s (wait 3480 s): 0.5 h x 2 CNY.
    TraceJob("c", 120, 1800, count=1, accelerators=("A800",), tenant="t1", max_wait_s=7200),
]


def test_three_jobs_known_costs_and_waits(tmp_path: Path, scenario: Scenario) -> None:
    # The fluid wait model: B's on-prem wait is A's remaining backlog, late at once, so B bursts
    # on arrival (the projected model would keep it until its last responsible moment).
    policy = tiny_policy(tmp_path, wait_model="fluid")
    jobs = build_jobs(THREE, policy, scenario)
    sim = simulate(policy, jobs, scenario, per_strategy_bounds=True)
    p = sim.result["strategies"]["policy"]
    waits = [r.wait_s for r in sim.runs["policy"].records]
    assert waits == pytest.approx([0.0, 60.0, 3480.0])
    assert p["cost_onprem"] == pytest.approx(3.0)
    assert p["cost_cloud"] == pytest.approx(10.0)
    assert p["cost"] == pytest.approx(13.0)
    assert p["slo_attainment"] == 1.0
    assert p["burst_fraction"] == pytest.approx(1 / 3, abs=1e-4)
    assert p["budget_violations"] == 0 and p["compliance_violations"] == 0
    # onprem-only: B waits for A (3540 s, late), C waits for B (7080 s, within its 2 h).
    o = sim.result["strategies"]["onprem-only"]
    assert [r.wait_s for r in sim.runs["onprem-only"].records] == pytest.approx([0.0, 3540.0, 7080.0])
    assert o["cost"] == pytest.approx(2.0 + 2.0 + 1.0)
    assert o["slo_attainment"] == pytest.approx(2 / 3, abs=1e-4)
    # cloud-cheapest: everything bursts, each up after 60 s.
    c = sim.result["strategies"]["cloud-cheapest"]
    assert c["cost"] == pytest.approx(10.0 + 10.0 + 5.0)
    assert c["p50_wait_s"] == pytest.approx(60.0)
    # The bound: A and C on-prem, B in the cloud (all on time) = 13; onprem-only may be late once.
    assert sim.result["lower_bound_cost"] == pytest.approx(13.0)
    assert o["lower_bound_cost"] <= o["cost"] + 1e-6
    assert sim.result["cost_ratio"] == pytest.approx(1.0)
    # The offline schedule: A now, B to the cloud (A holds the GPU past B's max_wait), C after A.
    assert sim.result["offline_cost"] == pytest.approx(13.0)
    assert {k: v for k, v in sim.result["offline"].items() if k != "method"} == {
        "onprem_jobs": 2,
        "cloud_jobs": 1,
        "late_jobs": 0,
        "unplaced": 0,
        "milp_cut_short": 0,
    }
    assert sim.result["offline_ratio"] == pytest.approx(1.0)


def test_csv_round_trip_and_format_detection(tmp_path: Path) -> None:
    buf = io.StringIO()
    write_csv(THREE, buf)
    path = tmp_path / "three.csv"
    path.write_text(buf.getvalue())
    jobs, info = read_trace(path)
    assert info.format == "csv"
    assert jobs == THREE


def test_cli_json_shape_and_report(
    tmp_path: Path, policy: Policy, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from broker.commands import simulate as cmd

    buf = io.StringIO()
    write_csv(THREE, buf)
    (tmp_path / "three.csv").write_text(buf.getvalue())
    parser = argparse.ArgumentParser()
    cmd.register(parser.add_subparsers())
    args = parser.parse_args(
        [
            "simulate",
            "--trace",
            str(tmp_path / "three.csv"),
            "--policy",
            str(tmp_path / "policy.yaml"),
            "--baselines",
            "all",
            "--output",
            "json",
            "--report",
            str(tmp_path / "report"),
        ]
    )
    assert args.handler(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["strategies"]) == {"policy", "onprem-only", "cloud-cheapest", "cheapest-offer"}
    for s in out["strategies"].values():
        for key in (
            "jobs",
            "cost",
            "p50_wait_s",
            "p95_wait_s",
            "slo_attainment",
            "burst_fraction",
            "carbon_kg",
            "budget_violations",
            "compliance_violations",
        ):
            assert key in s
    for key in ("lower_bound_cost", "cost_ratio", "sim_wall_s"):
        assert key in out
    for name in ("summary.md", "queue.png", "onprem_utilisation.png", "cost_by_strategy.png", "wait_cdf.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0


def _png_text(path: Path) -> dict[str, str]:
    """The tEXt chunks of a PNG (matplotlib writes `metadata=` there)."""
    import struct

    data = path.read_bytes()
    pos, out = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"tEXt":
            key, _, value = body.partition(b"\0")
            out[key.decode("latin-1")] = value.decode("latin-1")
        pos += 12 + length
    return out


def test_report_plots_have_titles_trimmed_axes_and_the_policy_ratio(
    tmp_path: Path, policy: Policy, scenario: Scenario
) -> None:
    """Obs. 9: titled plots, queue.png without an empty tail, the policy's own ratio in the summary."""
    import numpy as np

    from broker.sim.report import write_report

    # B waits for A's GPU (1 h, within its 2 h), then runs 10 h: the queue is empty for 90% of the run.
    trace = [
        TraceJob("a", 0, 3600, count=1, accelerators=("A800",), tenant="t1"),
        TraceJob("b", 60, 36000, count=1, accelerators=("A800",), tenant="t1", max_wait_s=7200),
    ]
    jobs = build_jobs(trace, policy, scenario)
    sim = simulate(policy, jobs, scenario)  # no per-strategy bounds: the policy row must still say
    write_report(tmp_path, {**sim.result, "currency": "CNY", "scenario": "three"}, sim.runs)
    for name in ("queue.png", "onprem_utilisation.png", "cost_by_strategy.png", "wait_cdf.png"):
        assert _png_text(tmp_path / name).get("Title"), name
    # The queue empties long before the last job ends: the x axis stops soon after it empties.
    last_queued = 0.0
    end = 0.0
    for run in sim.runs.values():
        t = np.array(run.series.t) / 3600
        q = np.array(run.series.queue)
        end = max(end, float(t[-1]))
        if np.nonzero(q)[0].size:
            last_queued = max(last_queued, float(t[np.nonzero(q)[0][-1]]))
    _, left, right = _png_text(tmp_path / "queue.png")["Description"].split()
    assert float(left) == 0 and float(right) <= last_queued * 1.05 + 1e-9
    assert last_queued < end / 2  # (the trace has a tail to trim)
    assert sim.result["strategies"]["policy"]["cost_ratio"] == pytest.approx(1.0)
    summary = (tmp_path / "summary.md").read_text().splitlines()
    policy_row = next(line for line in summary if line.startswith("| policy"))
    assert policy_row.split("|")[6].strip() == "1.00", policy_row
