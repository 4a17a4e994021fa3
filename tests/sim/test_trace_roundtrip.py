"""`write_csv` writes what `read_trace` reads back: the plain CSV a held-out trace is made in.
Its `%g` cells kept 6 significant digits, so a pod-list job submitted at 11,676,412 s came back at
11,676,400 and a 1,234,567 s run at 1,234,570."""

from __future__ import annotations

import io
from pathlib import Path

from broker.sim.traces import TraceJob, read_trace, write_csv

JOBS = [
    TraceJob("a", 11_676_412.0, 1_234_567.0, count=1, accelerators=("A800",), cpus=15.2, memory_gb=79.003906),
    TraceJob("b", 11_678_601.5, 8353.25, count=8, tenant="pku-nlp", max_wait_s=1_234_567.0, priority="low"),
]


def test_a_written_trace_reads_back_the_same_jobs(tmp_path: Path) -> None:
    buf = io.StringIO()
    write_csv(JOBS, buf)
    path = tmp_path / "trace.csv"
    path.write_text(buf.getvalue())
    jobs, _ = read_trace(path)
    assert jobs == JOBS, buf.getvalue()


def test_rows_at_the_same_instant_keep_their_file_order(tmp_path: Path) -> None:
    # Default names job-1 ... job-11 sorted as text put row 10 second; a name column gave another
    # order for the same rows. Ties keep the file's order, named or not.
    rows = [f"0,{60 * (i + 1)},A800,1" for i in range(11)]
    plain = tmp_path / "plain.csv"
    plain.write_text("submit_time,runtime,accelerator,count\n" + "\n".join(rows) + "\n")
    named = tmp_path / "named.csv"
    names = [f"z{i}" if i % 2 else f"a{i}" for i in range(11)]  # (text order not file order)
    named.write_text(
        "name,submit_time,runtime,accelerator,count\n"
        + "".join(f"{n},{r}\n" for n, r in zip(names, rows, strict=True))
    )
    in_file = [60.0 * (i + 1) for i in range(11)]
    assert [j.runtime_s for j in read_trace(plain)[0]] == in_file
    assert [j.runtime_s for j in read_trace(named)[0]] == in_file
