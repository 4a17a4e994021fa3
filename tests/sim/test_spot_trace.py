"""Alibaba's v2026 spot-GPU job list (`job_info_df.csv`) replays as a trace.

The bundled data names it as the trace to replay once downloaded (466,867 jobs, 119
organizations, HP and Spot jobs, multi-worker gangs), but `szb simulate` refused its header
("unknown trace header"). These files follow the list's published columns; the rows beyond
the published sample are made up for the test.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from broker.policy import load_policy
from broker.sim.jobs import build_jobs
from broker.sim.scenario import load_scenario
from broker.sim.traces import TraceError, TraceJob, read_trace, write_csv

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
HEADER = "job_name,organization,gpu_model,cpu_request,gpu_request,worker_num,submit_time,duration,job_type\n"
SAMPLE = (  # the four rows of the list's own README
    "239255,13,A10,20,1,1,0,2764799,HP\n"
    "253689,13,A10,8,1,1,0,15897599,HP\n"
    "437260,57,A100-SXM4-80GB,15,1,16,9589663,41060,Spot\n"
    "437261,57,A100-SXM4-80GB,15,1,94,9589663,71718,Spot\n"
)


def _write(tmp_path: Path, text: str, name: str = "job_info_df.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_published_sample_reads_as_gangs_of_its_workers(tmp_path: Path) -> None:
    jobs, info = read_trace(_write(tmp_path, HEADER + SAMPLE))
    assert info.format == "alibaba-spot-v2026" and info.rows == 4 and info.kept == 4
    got = [(j.name, j.group, j.count, j.nodes, j.cpus, j.accelerators, j.priority, j.runtime_s) for j in jobs]
    assert got == [
        ("239255", "13", 1, 1, 20.0, ("A10",), "normal", 2764799.0),
        ("253689", "13", 1, 1, 8.0, ("A10",), "normal", 15897599.0),
        ("437260", "57", 1, 16, 15.0, ("A100-80GB",), "low", 41060.0),
        ("437261", "57", 1, 94, 15.0, ("A100-80GB",), "low", 71718.0),
    ]
    assert all(j.gpu_spec for j in jobs)  # Alibaba's pool's models: `gpu_spec: ignore` drops them


def test_columns_in_another_order_an_index_column_and_undisclosed_models(tmp_path: Path) -> None:
    text = (
        ",submit_time,duration,job_type,worker_num,gpu_request,gpu_model,organization,job_name\n"
        "0,50,600,spot,1,0.5,GPU-series-1,7,a\n"
        "1,10,60,Hp,2,8,A800-SXM4-80GB,7,b\n"
        "2,20,90,HP,1,0,H800,8,c\n"
    )
    jobs, info = read_trace(_write(tmp_path, text))
    assert info.format == "alibaba-spot-v2026"
    assert [(j.name, j.submit_s, j.count, j.nodes, j.accelerators, j.priority) for j in jobs] == [
        ("b", 10.0, 8, 2, ("A800",), "normal"),
        ("c", 20.0, 0, 1, (), "normal"),  # a CPU-only job names no accelerator
        ("a", 50.0, 1, 1, (), "low"),  # half a GPU takes a whole one; an undisclosed model takes any
    ]
    assert [j.undisclosed for j in jobs] == ["", "", "GPU-series-1"]


@pytest.mark.parametrize(
    ("row", "said"),
    [
        ("1,13,A10,8,1,1,0,600,LP\n", ":3: job_type: 'LP' is neither HP nor Spot"),
        ("1,13,A10,8,1,1,0,600,\n", ":3: job_type: required"),
        ("1,13,A10,8,1,0,0,600,HP\n", ":3: worker_num: must be >= 1"),
        ("1,13,A10,8,1,2.5,0,600,HP\n", ":3: worker_num: must be a whole number"),
        # (review 58: Python's `could not convert string to float: 'x'` before)
        ("1,13,A10,8,1,x,0,600,HP\n", ":3: worker_num: must be a whole number, got 'x'"),
        ("1,13,A10,8,one,1,0,600,HP\n", ":3: gpu_request: must be a number, got 'one'"),
        ("1,13,A10,8,2.5,1,0,600,HP\n", ":3: gpu_request: a share of one GPU, or whole GPUs"),
        ("1,13,A10,8,-1,1,0,600,HP\n", ":3: gpu_request: must be >= 0"),
        ("1,13,A10,8,1,1,0,-5,HP\n", ":3: duration: must be >= 0"),
        ("1,13,A10,8,1,1,soon,600,HP\n", ":3: submit_time: "),
        ("1,13,A10,8,2000,1,0,600,HP\n", ":3: gpu_request: "),
        ("1,13,A10,8,1,1,0,600\n", ":3: 8 cells, the header has 9"),
    ],
)
def test_a_bad_cell_is_refused_at_its_line_and_column(tmp_path: Path, row: str, said: str) -> None:
    path = _write(tmp_path, HEADER + SAMPLE.splitlines(keepends=True)[0] + row)
    with pytest.raises(TraceError) as err:
        read_trace(path)
    assert f"{path}{said}" in str(err.value)


def test_jobs_of_more_workers_than_a_spec_takes_or_too_long_are_skipped_and_counted(tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER + SAMPLE + "9,57,A10,4,1,300,100,600,Spot\n")
    jobs, info = read_trace(path, max_runtime_s=7 * 86400)
    assert [j.name for j in jobs] == ["437260", "437261"]
    assert info.skipped == {
        "run time above the scenario's max_runtime": 2,
        "more than 256 workers (a job's most nodes)": 1,
    }


def test_a_given_format_that_is_not_the_headers_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "submit_time,runtime\n0,60\n", "plain.csv")
    with pytest.raises(TraceError, match="--trace-format alibaba-spot-v2026 given but the header is csv"):
        read_trace(path, "alibaba-spot-v2026")


def _organizations(count: int, jobs_each: int) -> str:
    rows = [
        f"{o * jobs_each + k},{o},A10,8,1,{1 + k % 2},{o * 10 + k},600,HP\n"
        for o in range(count)
        for k in range(jobs_each)
    ]
    return HEADER + "".join(rows)


def test_every_job_of_an_organization_is_one_tenants_and_gangs_keep_their_nodes(tmp_path: Path) -> None:
    policy = load_policy(CONFIGS / "policy-sim.yaml")
    scenario = load_scenario(CONFIGS / "scenarios/alibaba-peak.yaml")
    trace, _ = read_trace(_write(tmp_path, _organizations(40, 5)))
    jobs = build_jobs(trace, policy, scenario)
    tenants: dict[str, set[str]] = defaultdict(set)
    for tj, job in zip(trace, jobs, strict=True):
        assert tj.group is not None
        tenants[tj.group].add(job.tenant)
        assert job.spec.resources.nodes == tj.nodes and job.demand == tj.nodes * tj.count
    assert all(len(drawn) == 1 for drawn in tenants.values())
    assert len({t for drawn in tenants.values() for t in drawn}) > 1  # drawn per organization
    assert all(not job.spec.resources.accelerators.any_of for job in jobs)  # `gpu_spec: ignore`
    kept = build_jobs(trace, policy, scenario.model_copy(update={"gpu_spec": "keep"}))
    assert all(job.spec.resources.accelerators.any_of == ("A10",) for job in kept)


def test_organizations_do_not_move_the_tenants_drawn_for_rows_without_one(tmp_path: Path) -> None:
    """Groups draw from their own stream: a plain trace's tenants are what they were."""
    policy = load_policy(CONFIGS / "policy-sim.yaml")
    scenario = load_scenario(CONFIGS / "scenarios/alibaba-peak.yaml")
    plain = [TraceJob(f"p{i}", float(i), 60.0, count=1) for i in range(50)]
    mixed = [*plain, *(TraceJob(f"g{i}", 100.0 + i, 60.0, count=1, group=str(i % 3)) for i in range(20))]
    alone = [j.tenant for j in build_jobs(plain, policy, scenario)]
    assert [j.tenant for j in build_jobs(mixed, policy, scenario)][:50] == alone


def test_a_gang_and_its_organization_round_trip_through_a_plain_csv(tmp_path: Path) -> None:
    # Written without its organization, a v2026 job drew a tenant of its own when read back.
    jobs, _ = read_trace(_write(tmp_path, HEADER + SAMPLE))
    out = io.StringIO()
    write_csv(jobs, out)
    assert next(csv.reader(io.StringIO(out.getvalue())))[-2:] == ["nodes", "group"]
    back, _ = read_trace(_write(tmp_path, out.getvalue(), "copy.csv"))
    assert [(j.count, j.nodes, j.group) for j in back] == [(j.count, j.nodes, j.group) for j in jobs]


def test_szb_simulate_replays_the_list(tmp_path: Path) -> None:
    rows = "".join(
        f"{i},{i % 9},{'GPU-series-2' if i % 4 else 'A10'},8,{1 + i % 2},{1 + (i % 5 == 0)},"
        f"{i * 30},{300 + i * 7},{'Spot' if i % 3 else 'HP'}\n"
        for i in range(120)
    )
    path = _write(tmp_path, HEADER + rows)
    run = subprocess.run(
        [sys.executable, "-m", "broker.cli", "simulate", "--trace", str(path), "--policy",
         str(CONFIGS / "policy-sim.yaml"), "--baselines", "onprem-only", "--output", "json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert (result["format"], result["rows"], result["kept"]) == ("alibaba-spot-v2026", 120, 120)
    assert result["any_accelerator"] == {"GPU-series-2": 90}
    table = subprocess.run(
        [sys.executable, "-m", "broker.cli", "simulate", "--trace", str(path), "--policy",
         str(CONFIGS / "policy-sim.yaml"), "--baselines", "none", "--no-lower-bound"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert "Jobs of the trace's undisclosed models, run on any accelerator: GPU-series-2 (90)" in table.stdout
    policy = result["strategies"]["policy"]
    assert policy["jobs"] + policy["rejected"] == 120 and policy["cost"] > 0
    # With --jobs 8 only the first 8 by arrival are replayed (rows 0-7: 6 of them GPU-series-2); the
    # count covered the whole trace's 90 (held-out review).
    sample = subprocess.run(
        [sys.executable, "-m", "broker.cli", "simulate", "--trace", str(path), "--policy",
         str(CONFIGS / "policy-sim.yaml"), "--baselines", "none", "--no-lower-bound", "--jobs", "8",
         "-o", "json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert sample.returncode == 0, sample.stderr
    assert json.loads(sample.stdout)["any_accelerator"] == {"GPU-series-2": 6}


@pytest.mark.parametrize(
    ("row", "said"),
    [
        ("1,13,A10,8,1,inf,0,600,HP\n", ":3: worker_num: must be a finite number"),  # was an OverflowError
        ("1,13,A10,8,1,1e400,0,600,HP\n", ":3: worker_num: must be a finite number"),
        ("1,13,A10,8,1,nan,0,600,HP\n", ":3: worker_num: must be a finite number"),
        ("1,13,A10,-8,1,1,0,600,HP\n", ":3: cpu_request: must be >= 0, got -8"),  # was read as 0.1 CPUs
    ],
)
def test_cells_found_by_the_review_are_refused_at_their_line(tmp_path: Path, row: str, said: str) -> None:
    path = _write(tmp_path, HEADER + SAMPLE.splitlines(keepends=True)[0] + row)
    with pytest.raises(TraceError) as err:
        read_trace(path)
    assert f"{path}{said}" in str(err.value)


def test_a_row_after_a_blank_line_is_named_by_its_own_line(tmp_path: Path) -> None:
    # Rows were counted, not read off the file: a blank line moved every later error up one.
    text = HEADER + "1,13,A10,8,1,1,0,600,HP\n\n2,13,A10,8,1,1,0,600,HP\n3,13,A10,8,1,1,0,600,XX\n"
    path = _write(tmp_path, text)
    with pytest.raises(TraceError, match=r":5: job_type: 'XX'"):
        read_trace(path)


def test_a_misspelt_optional_column_is_refused_with_the_nearest_name(tmp_path: Path) -> None:
    # Read as absent, `organisation` gave every job a tenant of its own, silently.
    path = _write(tmp_path, HEADER.replace("organization", "organisation") + SAMPLE)
    said = r":1: organisation: unknown column \(did you mean 'organization'\?\)"
    with pytest.raises(TraceError, match=said):
        read_trace(path)
    header = HEADER.replace("job_type", "job_type,queue")
    extra = _write(tmp_path, header + "1,13,A10,8,1,1,0,600,HP,q1\n", "x.csv")
    assert len(read_trace(extra)[0]) == 1  # a column of another name is no misspelling: left alone


def test_models_are_counted_and_vetted_as_the_run_uses_them(tmp_path: Path) -> None:
    from broker.sim.trace_check import vet_trace

    rows = (
        "1,13,GPU-series-1,8,1,1,0,600,HP\n"
        "2,13,GPU-series-1,8,1,300,0,600,HP\n"  # skipped: more workers than a spec takes
        "3,13,H800-PCIe-80GB,8,1,1,0,600,HP\n"
    )
    path = _write(tmp_path, HEADER + rows)
    trace, info = read_trace(path)
    assert [j.undisclosed for j in trace] == ["GPU-series-1", ""]  # the kept jobs only
    policy = load_policy(CONFIGS / "policy-sim.yaml")
    with pytest.raises(TraceError, match=r":4: gpu_model: unknown accelerator 'H800-PCIe-80GB'"):
        vet_trace(trace, policy, path, info.format)  # the file's own column, not `accelerator`
    vet_trace(trace, policy, path, info.format, ignore_pool=True)  # `gpu_spec: ignore` drops the model


def test_a_byte_that_is_not_utf8_is_named_by_its_line(tmp_path: Path) -> None:
    # It was named by its byte offset ("position 99"), which no editor shows.
    path = tmp_path / "latin1.csv"
    path.write_bytes((HEADER + SAMPLE).encode() + "5,13,A10,8,1,1,0,600,Sp\u00e9t\n".encode("latin-1"))
    with pytest.raises(TraceError, match=r"latin1\.csv:6: not UTF-8"):
        read_trace(path)
