"""Fixtures shared by the policy, catalog and placement tests."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


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
