"""The Alibaba pod-list reader: nearby formats read, bad cells refused at FILE:LINE and column.

Found by the issue 15 held-out check. The pod lists Alibaba publishes beside the bundled one
(`openb_pod_list_default.csv` and others) may come without the `gpu_spec` column, and every row
of such a file was refused ("bad row: no 'gpu_spec' column"). A bad cell named its line but not
its column ("bad row: could not convert string to float: ''"), a `nan` time crashed the run
with a traceback, a negative `num_gpu` became one GPU, a pod deleted before it was scheduled
ran for one second, and a row cut short was skipped as "never scheduled".
"""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.sim.traces import TraceError, read_trace

HEADER = (
    "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,"
    "creation_time,deletion_time,scheduled_time\n"
)
ROW = "p0,8000,30517,1,1000,T4,LS,Running,100,4100,200\n"


def test_a_pod_list_without_gpu_spec_reads_with_any_accelerator(tmp_path: Path) -> None:
    path = tmp_path / "openb_pod_list_default.csv"
    path.write_text(
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli,qos,pod_phase,"
        "creation_time,deletion_time,scheduled_time\n"
        "p0,8000,30517,1,460,LS,Running,100,4100,200\n"
        "p1,88000,327680,8,1000,BE,Failed,150,900,160\n"
        "p2,4000,8192,0,0,LS,Running,160,400,170\n"
    )
    jobs, info = read_trace(path)
    assert info.format == "alibaba-v2023"
    assert [(j.name, j.count, j.accelerators, j.runtime_s) for j in jobs] == [
        ("p0", 1, (), 3900.0),
        ("p1", 8, (), 740.0),
        ("p2", 0, (), 230.0),
    ]


def _with(**cells: str) -> str:
    names = HEADER.strip().split(",")
    values = dict(zip(names, ROW.strip().split(","), strict=True)) | cells
    return HEADER + ROW + ",".join(values[n] for n in names) + "\n"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (_with(num_gpu="two"), ":3: num_gpu: "),
        (_with(num_gpu="-1"), ":3: num_gpu: must be >= 0"),
        (_with(num_gpu="1.5"), ":3: num_gpu: must be a whole number"),
        (_with(gpu_milli="1500"), ":3: gpu_milli: must be between 0 and 1000"),
        (_with(deletion_time=""), ":3: deletion_time: required"),
        (_with(creation_time="nan"), ":3: creation_time: must be a finite "),
        (_with(scheduled_time="inf"), ":3: scheduled_time: must be a finite "),
        (_with(deletion_time="150"), ":3: deletion_time: before scheduled_time (200)"),
        # Held-out review: these were read as they came (a creation time of 1e12 s crashed the
        # run with an OverflowError, an unknown qos ran at normal priority and an unknown model
        # on any accelerator, said nothing).
        (_with(scheduled_time="50"), ":3: scheduled_time: before creation_time (100)"),
        (_with(creation_time="-5"), ":3: creation_time: must be >= 0"),
        (_with(creation_time="1e12"), ":3: creation_time: 1e+12 is too large for seconds (milliseconds?"),
        (_with(qos="XX"), ":3: qos: unknown 'XX'; one of LS, Burstable, Guaranteed, BE"),
        (_with(gpu_spec="T4|V100M64"), ":3: gpu_spec: unknown 'V100M64' (did you mean 'V100M16'?)"),
        (_with(cpu_milli="lots"), ":3: cpu_milli: must be a number, got 'lots'"),
        # (review 58: these were Python's `could not convert string to float: 'one'`)
        (_with(num_gpu="one"), ":3: num_gpu: must be a whole number, got 'one'"),
        (_with(gpu_milli="half"), ":3: gpu_milli: must be a number, got 'half'"),
        # (they said `must be <= 65536.0` and `<= 4096.0`: the spec's limits, in GB and in CPUs)
        (_with(memory_mib="67200000"), ":3: memory_mib (as GB, 1,024 MiB to a GB): must be <= 65536"),
        (_with(cpu_milli="5000000"), ":3: cpu_milli (as CPUs, 1,000 to a CPU): must be <= 4096"),
        (HEADER + ROW + "p1,8000,30517,1,1000\n", ":3: 5 cells, the header has 11"),
        (HEADER + ROW + ROW.strip() + ",extra\n", ":3: 12 cells, the header has 11"),
    ],
)
def test_a_bad_cell_names_its_line_and_column(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "pods.csv"
    path.write_text(text)
    with pytest.raises(TraceError) as err:
        read_trace(path)
    assert str(err.value).startswith(f"{path}{where}"), str(err.value)


def test_a_plain_csv_row_may_leave_its_last_columns_out(tmp_path: Path) -> None:
    """The cell count is the pod list's rule; a hand-written plain CSV row may stop early (its
    optional columns then take their defaults), but a cell past the header is still refused."""
    path = tmp_path / "jobs.csv"
    path.write_text("submit_time,runtime,accelerator,count,tenant,max_wait\n0,1h\n60,2h,A10,2\n")
    jobs, _ = read_trace(path)
    assert [(j.submit_s, j.runtime_s, j.count, j.max_wait_s) for j in jobs] == [
        (0, 3600, 0, None),
        (60, 7200, 2, None),
    ]
    path.write_text("submit_time,runtime\n0,1h,A10\n")
    with pytest.raises(TraceError) as err:
        read_trace(path)
    assert str(err.value) == f"{path}:2: 3 cells, the header has 2"


def test_a_pod_never_scheduled_is_still_skipped(tmp_path: Path) -> None:
    path = tmp_path / "pods.csv"
    path.write_text(_with(scheduled_time=""))
    jobs, info = read_trace(path)
    assert [j.name for j in jobs] == ["p0"]
    assert info.skipped == {"never scheduled (run time unknown)": 1}


def test_a_trace_left_with_no_jobs_says_what_was_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from broker.cli import main

    path = tmp_path / "pods.csv"
    path.write_text(HEADER + "p0,8000,30517,1,1000,,BE,Pending,100,4100,\n" * 3)
    policy = str(Path(__file__).resolve().parents[2] / "configs" / "policy-sim.yaml")
    assert main(["simulate", "--trace", str(path), "--policy", policy, "--no-lower-bound"]) == 1
    err = capsys.readouterr().err
    want = "the trace has no jobs to replay: 3 rows skipped (never scheduled (run time unknown): 3)"
    assert want in err, err


def test_a_plain_csv_cut_short_mid_row_is_refused_at_its_line(tmp_path: Path) -> None:
    """Review: `0,36` with no newline after it (a truncated file) replayed as a 36 s CPU job of a
    drawn tenant, said nothing; a short row that ends its line is still one written short."""
    path = tmp_path / "jobs.csv"
    path.write_text("submit_time,runtime,accelerator,count,tenant,max_wait\n0,3600,A800,8,t1,30m\n0,36")
    with pytest.raises(TraceError) as err:
        read_trace(path)
    said = f"{path}:3: 2 cells, the header has 6, and the file ends"
    assert str(err.value).startswith(said), str(err.value)
    path.write_text("submit_time,runtime,accelerator\n0,1h,A800\r\n0,2h")
    with pytest.raises(TraceError, match=f"{path}:3: 2 cells"):
        read_trace(path)
    # A whole last row without a newline, or a short one ending its line, reads as before.
    path.write_text("submit_time,runtime,accelerator\n0,1h\n60,2h,A800")
    assert [j.runtime_s for j in read_trace(path)[0]] == [3600, 7200]
