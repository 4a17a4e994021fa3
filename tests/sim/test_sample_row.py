"""The README's quick-look simulator row (`--jobs N`, issue 15's sample option), run as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_quick_look_row_runs_as_written() -> None:
    rows = re.findall(r"^\| `(szb simulate [^`]*--jobs (\d+)[^`]*)`", (ROOT / "README.md").read_text(), re.M)
    assert rows, "the Benchmarks table has a `szb simulate ... --jobs N` row"
    command, n = rows[0][0], int(rows[0][1])
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    out = subprocess.run(
        ["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    # The solver's copyright banner is not the broker's to print: stderr carries only what a user acts on.
    assert "HiGHS" not in out.stderr, out.stderr
    result = json.loads(out.stdout)
    assert result["jobs_sampled"] == n and result["kept"] > n  # a sample of a longer trace
    for name in ("policy", "onprem-only", "cloud-cheapest", "cheapest-offer"):
        s = result["strategies"][name]
        assert s["jobs"] + s["rejected"] == n
    assert result["lower_bound_cost"] is not None and result["offline_cost"] is not None
