"""`szb simulate` on an install without the `sim` extra says what to install, before the run.

Found by installing the package plainly (`pip install shangzhuang-broker`, no extras) and typing
the README's simulate command: the whole policy run went by, then a forked worker's
`ModuleNotFoundError: No module named 'highspy'` came back as three chained tracebacks.
The extra's modules are hidden here by an import blocker (a `sitecustomize` on PYTHONPATH).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.brokerproc import ROOT

POLICY = str(ROOT / "configs" / "policy-sim.yaml")
BLOCKER = '''
import sys

class _Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("highspy", "matplotlib"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _Missing())
'''


def simulate(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "site").mkdir(exist_ok=True)
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCKER)
    return subprocess.run(
        [sys.executable, "-m", "broker.cli", "simulate", "--policy", POLICY, "--synthetic", "30", *args],
        cwd=ROOT,
        env={"PYTHONPATH": f"{tmp_path / 'site'}:{ROOT}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_references_without_highspy_are_one_line_naming_the_extra(tmp_path: Path) -> None:
    out = simulate(tmp_path)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    said = out.stderr.strip()
    assert said.startswith("szb: error: the references (the LP bound and the offline schedule) need HiGHS")
    assert "pip install 'shangzhuang-broker[sim]', or pass --no-lower-bound" in said
    assert out.stdout == ""  # refused before the run, not after it
    skipped = simulate(tmp_path, "--no-lower-bound")
    assert skipped.returncode == 0, skipped.stderr


def test_a_report_without_matplotlib_is_refused_before_the_run(tmp_path: Path) -> None:
    out = simulate(tmp_path, "--no-lower-bound", "--report", str(tmp_path / "report"))
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    assert "--report: the report's plots need matplotlib, which is not installed" in out.stderr
    assert not (tmp_path / "report").exists()
