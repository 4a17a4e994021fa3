"""A minimal policy: no accelerator or regime files of its own, the broker's bundled ones used."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
Cli = Callable[[list[str]], int]

MINIMAL = """\
version: 1
currency: CNY
sites:
  - id: campus
    adapter: slurm
    country: CN
    residency: cn-mainland
    partitions:
      - {name: gpu, accelerator: A800, count_per_node: 8, price_hour: 2}
tenants:
  - {id: lab, kind: university, entity_country: CN}
compliance:
  residency:
    zones: {cn-mainland: {countries: [CN]}}
"""


def test_a_policy_naming_no_catalog_files_uses_the_bundled_ones(
    cli: Cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(MINIMAL, encoding="utf-8")
    assert cli(["policy", "check", str(path)]) == 0
    assert "ok: 1 sites, 1 tenants" in capsys.readouterr().out


def test_files_beside_the_policy_win_over_the_bundled_ones(
    cli: Cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(CONFIGS / "regimes.yaml", tmp_path / "regimes.yaml")
    (tmp_path / "accelerators.yaml").write_text("accelerators: [oops\n", encoding="utf-8")
    path = tmp_path / "policy.yaml"
    path.write_text(MINIMAL, encoding="utf-8")
    assert cli(["policy", "check", str(path)]) == 1
    assert "accelerators.yaml" in capsys.readouterr().err


def test_a_named_file_that_is_missing_is_still_an_error(
    cli: Cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.yaml"
    named = MINIMAL.replace("currency: CNY\n", "currency: CNY\naccelerators: accel.yaml\n")
    path.write_text(named, encoding="utf-8")
    assert cli(["policy", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:3:15: error: accelerators: file not found" in err
    # A copy saved elsewhere (a candidate for `szb policy replay`) is told the way out.
    assert "without this line the broker's bundled accelerators.yaml is used" in err
