"""`szb simulate` refuses sizes it cannot run with a usage-style message, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.cli import main

POLICY = Path(__file__).resolve().parents[2] / "configs" / "policy-sim.yaml"


@pytest.mark.parametrize("n", ["0", "-1"])
def test_a_synthetic_size_below_one_is_refused(n: str, capsys: pytest.CaptureFixture[str]) -> None:
    # (0 raised ZeroDivisionError in the generator; -1 claimed "the trace has no jobs")
    assert main(["simulate", "--synthetic", n, "--policy", str(POLICY), "-o", "json"]) == 1
    assert capsys.readouterr().err.strip() == f"szb: error: --synthetic: must be >= 1, got {n}"
