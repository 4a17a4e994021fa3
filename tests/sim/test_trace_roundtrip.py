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
