"""Fixtures shared by the policy, catalog and placement tests, and how `pytest -n N` splits the suite."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling

from broker.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


class FileScheduling(LoadScopeScheduling):
    """Each test file runs on one worker, and every Slurm test on the same one.

    A file's broker and cloud doubles are module fixtures, so splitting a file would start them on
    every worker. The Slurm tests share the run's one single-node cluster and count on its GPUs
    being theirs, so two of them must never run at once.
    """

    def _split_scope(self, nodeid: str) -> str:
        path = nodeid.split("::", 1)[0]
        return "tests/slurm" if path.startswith("tests/slurm/") else path


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> LoadScopeScheduling:
    """`pytest -n N`: the suite's own scheduling (xdist's loadgroup ignores groups added at collection)."""
    return FileScheduling(config, log)  # type: ignore[arg-type]


@pytest.fixture
def cli() -> Callable[[list[str]], int]:
    """Run `szb` in-process (exit code returned, output captured by capsys)."""
    return main


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """A folder with the accelerator and regime catalogs next to where a policy will go."""
    for name in ("accelerators.yaml", "regimes.yaml"):
        shutil.copy(CONFIGS / name, tmp_path / name)
    (tmp_path / "catalog").mkdir()
    shutil.copy(CONFIGS / "catalog" / "aws_gpu_vms.csv", tmp_path / "catalog" / "aws_gpu_vms.csv")
    return tmp_path


@pytest.fixture
def write_policy(policy_dir: Path) -> Callable[[str], Path]:
    def write(text: str) -> Path:
        path = policy_dir / "policy.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    return write
