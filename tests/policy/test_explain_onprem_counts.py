"""`szb explain`'s table shows an on-prem partition's offer for the job's own accelerator count only.

An on-prem partition offers every count from 1 to its node's size, so a 2-GPU job's table had
eight rows per partition: six "allowed" at a higher price it would never be given, one rejected
for being too small. The table keeps the row that could serve the job (its count; the nearest
when the partition has none, so a misfit still says why) and says how many it left out;
`--output json` keeps every offer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
Cli = Callable[[list[str]], int]


def job_file(tmp_path: Path, count: int) -> Path:
    job = tmp_path / f"job{count}.yaml"
    job.write_text("name: tuned\ncommand: ['true']\nruntime_estimate: 6h\nmax_wait: 30m\n"
                   f"resources: {{accelerators: {{count: {count}, any_of: [A800, H800, Ascend910B]}}}}\n"
                   "data_residency: cn-mainland\n")
    return job


def onprem_rows(out: str) -> list[str]:
    """(instance, accelerators) of each on-prem row of the printed table."""
    return [" ".join(m.groups()) for m in re.finditer(r"shangzhuang-onprem\s*│\s*(\S+)\s*│\s*(\S+)\s*│", out)]


def test_the_table_shows_each_onprem_partition_at_the_jobs_count(
    cli: Cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = str(CONFIGS / "policy.yaml")
    assert cli(["explain", str(job_file(tmp_path, 2)), "--policy", policy, "--limit", "100"]) == 0
    out = capsys.readouterr().out
    rows = onprem_rows(out)
    # On main: Ascend910Bx1..x8 and A800x1..x8 (the x1s rejected, x3..x8 "allowed").
    assert sorted(rows) == ["a800 A800x2", "ascend Ascend910Bx2", "cpu -"], rows
    assert "14 on-prem offers of other accelerator counts are not shown (--output json has them)" in out, out
    assert re.search(r"15 of \d+ offers allowed", out), out  # (the counts are of every offer, as before)

    assert cli(["explain", str(job_file(tmp_path, 2)), "--policy", policy, "-o", "json"]) == 0
    body = json.loads(capsys.readouterr().out)
    counts = sorted(o["count"] for o in body["offers"]
                    if o["site"] == "shangzhuang-onprem" and o["instance_type"] == "a800")
    assert counts == [1, 2, 3, 4, 5, 6, 7, 8]


def test_a_job_larger_than_a_node_keeps_the_partitions_largest_row_and_its_reason(
    cli: Cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(["explain", str(job_file(tmp_path, 12)), "--policy", str(CONFIGS / "policy.yaml"), "--limit", "300"])
    out = capsys.readouterr().out
    assert sorted(r for r in onprem_rows(out) if r != "cpu -") == ["a800 A800x8", "ascend Ascend910Bx8"], out
    assert "[hardware.fit] a800 has 8 x A800; the job needs 12" in " ".join(out.split()), out
