from __future__ import annotations

import argparse
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.commands import explain, hardware, policy

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="szb")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (policy, hardware, explain):
        module.register(sub)
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


@pytest.fixture
def cli() -> Callable[[list[str]], int]:
    """Run `szb` with this package's command groups registered."""
    return run_cli


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
