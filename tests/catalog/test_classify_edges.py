"""Accelerators an operator declares at the very thresholds of the 2023 rule, through `szb hardware classify`.

The thresholds are decimals (PD 5.92, 3.2, 1.6) and so are the datasheet figures an operator writes;
a part whose PD is exactly a threshold meets it, and a part just under a threshold is not shown at it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

PARTS = {
    # name: (dense fp16 TOPS, die mm2): TPP = TOPS x 16, PD = TPP / die, worked out by hand
    "pd-592": (128.39, 347.0),  # TPP 2054.24, PD 2054.24 / 347 = 5.92 exactly: a.2
    "pd-32": (100.1, 500.5),  # TPP 1601.6, PD 1601.6 / 500.5 = 3.2 exactly: b.2
    "pd-16": (150.04, 1500.4),  # TPP 2400.64, PD 2400.64 / 1500.4 = 1.6 exactly: b.1
    "under-pd-592": (111, 300.1),  # TPP 1776, PD 5.918...: b.2, not a.2
    "under-tpp-4800": (299.999, 2000),  # TPP 4799.984, PD 2.39...: b.1, not a.1
    "under-pd-16": (150, 1500.5),  # TPP 2400, PD 1.5995...: none
}


def _classify(tmp_path: Path, cli, capsys: pytest.CaptureFixture[str], output: str) -> str:  # type: ignore[no-untyped-def]
    lines = ["accelerators:"]
    for name, (tops, die) in PARTS.items():
        lines.append(
            f"  - {{name: {name}, vendor: Example, memory_gb: 48, dense_tops: {{fp16: {tops}}}, "
            f"die_area_mm2: {die}, interconnect_gbps: 64, datacenter: true, origin_country: US}}"
        )
    (tmp_path / "accelerators.yaml").write_text("\n".join(lines) + "\n")
    shutil.copy(CONFIGS / "regimes.yaml", tmp_path / "regimes.yaml")
    assert cli(["hardware", "classify", "--catalog", str(tmp_path / "accelerators.yaml"), "-o", output]) == 0
    return capsys.readouterr().out


def test_a_part_exactly_at_a_density_threshold_meets_it(tmp_path: Path, cli, capsys) -> None:  # type: ignore[no-untyped-def]
    rows = {r["name"]: r for r in json.loads(_classify(tmp_path, cli, capsys, "json"))}
    assert rows["pd-592"]["class"] == "3A090.a" and "a.2" in rows["pd-592"]["reason"]
    assert rows["pd-32"]["class"] == "3A090.b" and "b.2" in rows["pd-32"]["reason"]
    assert rows["pd-16"]["class"] == "3A090.b" and "b.1" in rows["pd-16"]["reason"]
    assert (rows["pd-592"]["pd"], rows["pd-32"]["pd"], rows["pd-16"]["pd"]) == (5.92, 3.2, 1.6)


def test_a_part_just_under_a_threshold_is_not_shown_at_it(tmp_path: Path, cli, capsys) -> None:  # type: ignore[no-untyped-def]
    rows = {r["name"]: r for r in json.loads(_classify(tmp_path, cli, capsys, "json"))}
    under_pd = rows["under-pd-592"]
    assert under_pd["class"] == "3A090.b" and under_pd["pd"] < 5.92
    assert "PD 5.92:" not in under_pd["reason"] and "PD 5.918" in under_pd["reason"]
    under_tpp = rows["under-tpp-4800"]
    assert under_tpp["class"] == "3A090.b" and under_tpp["tpp"] < 4800
    assert "TPP 4800:" not in under_tpp["reason"] and "TPP 4799.98" in under_tpp["reason"]
    under_16 = rows["under-pd-16"]
    assert under_16["class"] == "none" and under_16["pd"] < 1.6 and "PD 1.60:" not in under_16["reason"]
    # the same parts in the table: no figure is rounded onto the threshold its class is short of
    table = {
        line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:5]]
        for line in _classify(tmp_path, cli, capsys, "table").splitlines()
        if line.startswith("│")
    }
    assert table["under-pd-592"][1] != "5.92" and table["under-pd-592"][2] == "3A090.b"
    assert table["under-tpp-4800"][0] != "4,800" and table["under-tpp-4800"][2] == "3A090.b"
    assert table["under-pd-16"][1] != "1.60" and table["under-pd-16"][2] == "none"
    assert table["pd-592"][1] == "5.92" and table["pd-592"][2] == "3A090.a"
