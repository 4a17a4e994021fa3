"""`--report` to a folder that cannot be written: refused before the run, or (when writing still
fails after it) the result printed first and one clean error line, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "configs" / "policy-sim.yaml"


def szb(*argv: str) -> subprocess.CompletedProcess[str]:
    """A real `szb` run (the installed entry point's module), from the worktree."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "broker.cli", *argv], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_a_folder_that_cannot_be_made_is_refused_before_the_run() -> None:
    # Review: as root os.access said /proc was writable; mkdir then failed after the whole run.
    out = szb("simulate", "--synthetic", "5", "--policy", str(POLICY), "--no-lower-bound",
              "-o", "json", "--report", "/proc/szb-report")
    assert out.returncode == 1
    assert out.stdout == ""
    assert "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("szb: error: --report /proc/szb-report: "), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_a_report_that_fails_to_write_after_the_run_prints_the_result_first(tmp_path: Path) -> None:
    report = tmp_path / "report"
    (report / "result.json").mkdir(parents=True)  # the folder is writable; this one file is not
    out = szb("simulate", "--synthetic", "5", "--policy", str(POLICY), "--no-lower-bound",
              "-o", "json", "--report", str(report))
    assert out.returncode == 1
    assert "Traceback" not in out.stderr, out.stderr
    body = json.loads(out.stdout)
    assert body["strategies"]["policy"]["jobs"] == 5 and "report" not in body
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith(f"szb: error: --report {report}: "), out.stderr
    assert not any(line.startswith("szb: error:") for line in lines[:-1]), out.stderr
    # The check's probe leaves nothing behind: a run refused after it leaves no folder it made.
    made = tmp_path / "new" / "deeper"
    ok = szb("simulate", "--synthetic", "5", "--policy", str(POLICY), "--jobs", "0",
             "--report", str(made))
    assert ok.returncode != 0
    assert not (tmp_path / "new").exists()
