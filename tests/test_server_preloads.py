"""The server loads what its first decisions need at start-up, not inside them: the array
scoring (numpy) that placement imports lazily so the CLI does not pay for it."""

from __future__ import annotations

import subprocess
import sys


def _loaded_after(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_server_loads_the_array_scoring_at_start_up() -> None:
    assert {"broker.placement.vector", "numpy"} <= _loaded_after("broker.app")


def test_the_cli_still_leaves_it_to_the_first_decision() -> None:
    assert "numpy" not in _loaded_after("broker.cli")
