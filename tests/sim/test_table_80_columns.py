"""`szb simulate --output table` in a terminal 80 columns wide shows every figure whole.

Review: rich cut the twelve-column strategy table to fit, every cost reading `6,…`. A table
wider than the terminal is now split into tables that fit, each led by the strategy (or tenant).
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

from broker.sim.report import money

ROOT = Path(__file__).resolve().parents[2]
ARGV = ["simulate", "--synthetic", "200", "--policy", str(ROOT / "configs" / "policy-sim.yaml")]
ARGV += ["--baselines", "all", "--no-lower-bound"]


def in_terminal(argv: list[str], columns: int) -> str:
    """What `szb ARGV` prints to a terminal `columns` wide (a pty: rich sizes its tables to it)."""
    master, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {**os.environ, "COLUMNS": str(columns), "NO_COLOR": "1", "TERM": "dumb"}
    command = [sys.executable, "-m", "broker.cli", *argv]
    proc = subprocess.Popen(command, stdout=child, stdin=subprocess.DEVNULL, env=env, cwd=ROOT)
    os.close(child)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # (EIO: the child closed its end)
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=300) == 0
    return out.decode().replace("\r\n", "\n")


def test_every_cost_is_whole_at_80_columns() -> None:
    figures = json.loads(
        subprocess.run(
            [sys.executable, "-m", "broker.cli", *ARGV, "-o", "json"],
            cwd=ROOT, capture_output=True, text=True, check=True, timeout=300,
        ).stdout
    )["strategies"]
    assert len(figures) == 4
    out = in_terminal([*ARGV, "-o", "table"], 80)
    assert "…" not in out, out
    assert max(len(line) for line in out.splitlines()) <= 80, out
    for name, s in figures.items():
        row = next(line for line in out.splitlines() if line.startswith(f"│ {name} "))
        assert f" {money(s['cost'])} │" in row, (name, money(s["cost"]), out)
        wait = s["p95_wait_s"]
        said = f"{wait:,.2f}" if isinstance(wait, float) else str(wait)
        assert f" {said} │" in row, (name, said, out)
