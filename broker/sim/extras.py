"""The `sim` extra's modules, looked for before a run: a base install (`pip install
shangzhuang-broker`) that lacks one gets one line saying what to install, not a traceback after
the policy's whole run."""

from __future__ import annotations

import importlib.util

INSTALL = "pip install 'shangzhuang-broker[sim]'"


def installed(module: str) -> bool:
    """Whether `module` can be imported here (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_solver() -> None:
    """ValueError when the references' solver (HiGHS) is missing."""
    if not installed("highspy"):
        raise ValueError(
            "the references (the LP bound and the offline schedule) need HiGHS (highspy), which is"
            f" not installed: {INSTALL}, or pass --no-lower-bound"
        )


def check_plots(option: str = "--report") -> None:
    """ValueError naming `option` when matplotlib, which draws a report's plots, is missing."""
    if not installed("matplotlib"):
        raise ValueError(f"{option}: the report's plots need matplotlib, which is not installed: {INSTALL}")
