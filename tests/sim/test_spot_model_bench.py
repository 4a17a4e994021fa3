"""`bench/spot_model.py` draws the README's spot figure: a name it cannot draw to is one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def draw(out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "bench/spot_model.py", "--out", str(out)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_the_figure_is_drawn_where_asked(tmp_path: Path) -> None:
    out = draw(tmp_path / "sub" / "spot.png")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "sub" / "spot.png").stat().st_size > 1000


def test_a_file_type_it_cannot_draw_is_one_line(tmp_path: Path) -> None:
    out = draw(tmp_path / "spot.txt")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "--out" in out.stderr and "'txt' is not supported" in out.stderr, out.stderr
