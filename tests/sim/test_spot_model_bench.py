"""`bench/spot_model.py` draws the README's spot figure: a name it cannot draw to is one line."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.sim.conftest import run_bench


def draw(out: Path) -> subprocess.CompletedProcess[str]:
    return run_bench("spot_model", "--out", str(out), timeout=120)


def test_the_figure_is_drawn_where_asked(tmp_path: Path) -> None:
    out = draw(tmp_path / "sub" / "spot.png")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "sub" / "spot.png").stat().st_size > 1000


def test_a_file_type_it_cannot_draw_is_one_line(tmp_path: Path) -> None:
    out = draw(tmp_path / "spot.txt")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "--out" in out.stderr and "'txt' is not supported" in out.stderr, out.stderr
