"""A reader that goes away (`szb ... | head`) ends a command quietly with 141, whether it prints a
rich table or JSON: rich turned a closed stdout into a silent exit 1, which scripts read as failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "argv",
    [
        ["hardware", "classify"],
        ["hardware", "classify", "--output", "json"],
    ],
    ids=["table", "json"],
)
def test_a_closed_stdout_exits_141_quietly(argv: list[str]) -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first write: every write fails with EPIPE
    try:
        done = subprocess.run(
            [sys.executable, "-m", "broker.cli", *argv],
            cwd=ROOT, stdout=write, stderr=subprocess.PIPE, text=True, timeout=60,
        )
    finally:
        os.close(write)
    assert done.returncode == 141, done.stderr
    assert done.stderr == "", done.stderr
