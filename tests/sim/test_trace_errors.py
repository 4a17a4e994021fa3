"""A trace row the simulator cannot use is refused at its FILE:LINE and column (issue 15 review).

Before, a bad value reached the job-spec model unannotated (`1 validation error for Resources
cpus ...`, no file or line), a header with spaces lost its columns, and a tenant or accelerator
the policy does not know turned silently into refused jobs.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from broker.cli import main
from broker.sim.traces import TraceError, read_trace

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "configs" / "policy-sim.yaml"


@pytest.mark.parametrize(
    ("rows", "where"),
    [
        ("submit_time,runtime,cpus\n0,1h,2\n60,1h,nan\n", ":3: cpus: must be a finite number"),
        ("submit_time,runtime,accelerator,count\n0,1h,A10,-2\n", ":2: count: must be >= 0"),
        ("submit_time,runtime,accelerator,count\n0,1h,A10,2.5\n", ":2: count: must be a whole number"),
        ("submit_time,runtime,accelerator,count\n0,1h,A10,5000\n", ":2: count: must be <= 1024"),
        ("submit_time,runtime,memory_gb\n0,1h,-5\n", ":2: memory_gb: must be > 0"),
        # (Python's `could not convert string to float: 'abc'` before; and a file with old Mac
        # line ends, CR alone, read none of its rows: `new-line character seen in unquoted field`)
        ("submit_time,runtime,memory_gb\n0,1h,abc\n", ":2: memory_gb: must be a number, got 'abc'"),
        ("submit_time,runtime,cpus\r0,1h,2\r60,1h,x\r", ":3: cpus: must be a number, got 'x'"),
        # (review 58: Python's `count: could not convert string to float: 'x'`, as for nodes)
        ("submit_time,runtime,accelerator,count\n0,1h,A10,x\n", ":2: count: must be a whole number, got 'x'"),
        ("submit_time,runtime,nodes\n0,1h,two\n", ":2: nodes: must be a whole number, got 'two'"),
        ("submit_time,runtime,residency\n0,1h,eu-west\n", ":2: residency: must be one of"),
        ("submit_time,runtime,priority\n0,1h,urgent\n", ":2: priority: must be one of"),
        ("submit_time,runtime\n0,\n", ":2: runtime: required"),
        ("submit_time,runtime\nsoon,1h\n", ":2: submit_time: must be a duration"),
        ("submit_time,runtime,max_wait\n0,1h,later\n", ":2: max_wait: must be a duration"),
        # (a negative number was "must be a duration such as 30m", though it is one, in seconds)
        ("submit_time,runtime\n-100,1h\n", ":2: submit_time: must be >= 0, got -100"),
        ("submit_time,runtime\n0,-5\n", ":2: runtime: must be >= 0, got -5"),
        ("submit_time,runtime,max_wait\n0,1h,-1e3\n", ":2: max_wait: must be >= 0, got -1000"),
        # Each read silently before: a CPU-only job, the last of two columns, a column dropped,
        # and a tenant or runtime "required" where an open quote had swallowed the next rows.
        ("submit_time,runtime,accelerator,count\n0,1h,A800,0\n", ":2: count: 0 with accelerator A800"),
        ("submit_time,runtime,count,count\n0,1h,1,2\n", ":1: column count appears twice"),
        (",submit_time,runtime\nx,0,1h\n", ":1: column 1 of the header has no name"),
        ('submit_time,runtime,tenant\n0,1h,"t1\n10,1h,t1\n', ":2: a quote is left open (the quoted"),
    ],
)
def test_a_bad_value_names_its_line_and_column(tmp_path: Path, rows: str, where: str) -> None:
    path = tmp_path / "trace.csv"
    path.write_text(rows)
    with pytest.raises(TraceError) as err:
        read_trace(path)
    assert str(err.value).startswith(f"{path}{where}"), str(err.value)


def test_a_header_with_spaces_reads_as_written(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text("submit_time , runtime , count , accelerator\n0, 1h, 1, A10\n30, 2h, 0,\n")
    jobs, info = read_trace(path)
    assert info.format == "csv" and [(j.submit_s, j.runtime_s, j.count) for j in jobs] == [
        (0, 3600, 1),
        (30, 7200, 0),
    ]
    assert [j.line for j in jobs] == [2, 3]


def run(tmp_path: Path, rows: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    path = tmp_path / "trace.csv"
    path.write_text(rows)
    code = main(["simulate", "--trace", str(path), "--policy", str(POLICY), "--no-lower-bound", "-o", "json"])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_tenant_or_accelerator_the_policy_lacks_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(tmp_path, "submit_time,runtime,tenant\n0,1h,pku-nlp\n9,1h,pku_nlp\n", capsys)
    assert code == 1 and "trace.csv:3: tenant: 'pku_nlp' is not a tenant of the policy" in err, err
    assert "did you mean 'pku-nlp'" in err
    code, _, err = run(tmp_path, "submit_time,runtime,accelerator,count\n0,1h,A10,1\n5,1h,H100X,1\n", capsys)
    assert code == 1 and "trace.csv:3: accelerator: unknown accelerator 'H100X'" in err, err
    # Known ones, spelt as the catalog allows, still run.
    code, out, err = run(
        tmp_path, "submit_time,runtime,accelerator,count,tenant\n0,1h,a10,1,pku-nlp\n", capsys
    )
    assert code == 0, err
    assert json.loads(out)["strategies"]["policy"]["jobs"] == 1


def test_a_cut_or_corrupt_gzip_is_a_trace_error(tmp_path: Path) -> None:
    import gzip

    whole = gzip.compress(b"submit_time,runtime\n" + b"0,1h\n" * 5000)
    for name, data in (("cut.csv.gz", whole[: len(whole) // 2]), ("bad.csv.gz", whole[:10] + b"\x00" * 50)):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(TraceError) as err:  # (a cut file raised a bare EOFError)
            read_trace(path)
        assert str(err.value).startswith(f"{path}: cannot read: "), str(err.value)


def test_an_unknown_column_of_a_plain_csv_is_refused_with_the_known_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plain CSV with `gpu_type,gpu_count` (the README names 'accelerator type/count', not the
    columns) was read as CPU-only jobs: the unknown columns were ignored without a word."""
    code, _, err = run(tmp_path, "submit_time,runtime,gpu_type,gpu_count\n0,1h,A800,2\n", capsys)
    assert code == 1, err
    assert "trace.csv:1: gpu_type: unknown column" in err, err
    assert "gpu_count: unknown column (did you mean 'count'?)" in err, err
    assert "accelerator" in err and "memory_gb" in err  # the known columns are listed


@pytest.mark.parametrize(("typo", "near"), [("gpu_specs", "gpu_spec"), ("qoss", "qos")])
def test_a_misspelt_column_of_a_v2023_pod_list_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], typo: str, near: str
) -> None:
    """Held-out review: `gpu_specs` was read as a missing `gpu_spec`, so a T4 pod ran on any
    accelerator (on-prem, where the spelt-right one is refused), without a word."""
    header = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,"
    header += "scheduled_time\n"
    row = "p0,8000,16384,1,1000,T4,LS,Running,0,100,0\n"
    code, _, err = run(tmp_path, header.replace(near, typo, 1) + row, capsys)
    assert code == 1, err
    assert f"trace.csv:1: {typo}: unknown column (did you mean '{near}'?)" in err, err


def test_seconds_in_any_number_notation_read_as_seconds(tmp_path: Path) -> None:
    """A trace exported by another tool may write `1.2e6` seconds or `600.0`; only `600` and
    `1h` read before (the Alibaba pod list's times were read as any number already)."""
    path = tmp_path / "trace.csv"
    path.write_text("submit_time,runtime,max_wait\n1.2e6,600.0,1e3\n1.2e6,1h,\n")
    jobs, _ = read_trace(path)
    assert [(j.submit_s, j.runtime_s, j.max_wait_s) for j in jobs] == [
        (1.2e6, 600.0, 1000.0),
        (1.2e6, 3600.0, None),
    ]


def test_fractions_of_a_second_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Review: a runtime of 3600.5 s or a max_wait of 600.7 s (seconds, as the README says) stopped
    the run with a raw pydantic dump naming no line: a job spec holds whole seconds. The spec's
    estimate and max_wait are rounded; the job still runs its 3600.5 s."""
    code, out, err = run(tmp_path, "submit_time,runtime,max_wait,count\n0,3600.5,600.7,1\n5,0.4,,1\n", capsys)
    assert code == 0, err
    policy = json.loads(out)["strategies"]["policy"]
    assert policy["jobs"] == 2 and policy["rejected"] == 0, policy


def test_every_name_the_policy_lacks_is_named_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A held-out trace of other tenants was refused at its first unknown name only: fixing the
    policy for it took one run per name."""
    rows = (
        "submit_time,runtime,accelerator,count,tenant\n"
        "0,1h,A800,1,pku-nlp\n"
        "10,1h,B300,1,tsinghua\n"
        "20,1h,A800,1,acme\n"
        "30,1h,A800,1,tsinghua\n"
    )
    code, _, err = run(tmp_path, rows, capsys)
    assert code == 1
    for said in (
        "trace.csv:3: tenant: 'tsinghua' is not a tenant of the policy",
        "trace.csv:3: accelerator: unknown accelerator 'B300'",
        "trace.csv:4: tenant: 'acme' is not a tenant of the policy",
    ):
        assert said in err, err
    assert err.count("'tsinghua'") == 1 and "2 rows" in err, err  # once, with its rows counted


@pytest.mark.parametrize(
    ("name", "content", "said"),
    [
        ("empty.csv", b"", ":1: empty file: no header row"),
        ("empty.csv.gz", gzip.compress(b"", mtime=0), ":1: empty file: no header row"),  # (same bytes: xdist)
        ("blank.csv", b"\n\n", ":1: empty file: no header row"),
        ("wrong.csv", b"a,b,c\n1,2,3\n", ":1: unknown trace header ['a', 'b', 'c']: expected"),
        ("misspelt.csv", b"submit_tme,runtime\n0,1h\n",
         ":1: unknown trace header ['runtime', 'submit_tme']: submit_tme: unknown column (did you mean "
         "'submit_time'?); expected"),
        ("zero.csv", b"submit_time,runtime\n0,1h\n10,0\n",
         ":3: runtime: must be > 0 (a job runs at least 1 s)"),
    ],
    ids=["empty", "empty-gz", "blank", "wrong-header", "misspelt", "zero-runtime"],
)
def test_a_trace_that_is_no_known_list_names_its_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes, said: str
) -> None:
    """Review of issue 15 (F5): an empty file, an empty .gz, a wrong or misspelt header gave
    `unknown trace header []: ...` naming no file, line or nearest name; a runtime of 0 was run."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(TraceError) as err:
        read_trace(path)
    assert str(err.value).startswith(f"{path}{said}"), str(err.value)
    code = main(["simulate", "--trace", str(path), "--policy", str(POLICY), "--no-lower-bound", "-o", "json"])
    printed = capsys.readouterr().err
    assert code == 1 and printed.startswith(f"szb: error: {path}{said}"), printed
    assert "Traceback" not in printed
