"""The README's flood command, run literally (issue 14's "done when"): the small tenants' p95
wait is within their max_wait while the flooding tenant's work still all starts and ends."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

from tests.brokerproc import ROOT

COMMAND = (
    "szb simulate --synthetic 4000 --policy configs/policy-sim.yaml --scenario "
    "configs/scenarios/flood.yaml --no-lower-bound --report DIR"
)


def test_readme_flood_command_keeps_small_tenants_within_max_wait(tmp_path: Path) -> None:
    assert COMMAND in (ROOT / "README.md").read_text()
    argv = shlex.split(COMMAND.replace("DIR", str(tmp_path / "report")))
    done = subprocess.run(
        [sys.executable, "-m", "broker.cli", *argv[1:]], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    tenants = json.loads((tmp_path / "report" / "result.json").read_text())["strategies"]["policy"]["tenants"]
    for small in ("pku-nlp", "sg-partner"):
        assert tenants[small]["p95_wait_s"] <= tenants[small]["max_wait_s"], (small, tenants[small])
    flood = tenants["zhipu-sme"]
    assert flood["jobs"] > 10 * tenants["pku-nlp"]["jobs"] * 0.9 and flood["never_started"] == 0
    assert "p95 wait" in (tmp_path / "report" / "summary.md").read_text()
