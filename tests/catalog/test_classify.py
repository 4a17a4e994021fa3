"""Every catalog accelerator classified, checked against thresholds computed here independently."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.catalog import load_accelerators
from broker.catalog.instances import load_instance_csv
from broker.compliance import classify, load_regimes

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CATALOG = load_accelerators(CONFIGS / "accelerators.yaml")
REGIMES = load_regimes(CONFIGS / "regimes.yaml")
BITS = {"fp4": 4, "int4": 4, "fp8": 8, "int8": 8, "fp16": 16, "bf16": 16, "tf32": 32, "fp32": 32, "fp64": 64}


def expected_2023(tpp: float, pd: float | None, datacenter: bool) -> str:
    """The Oct 2023 rule written out by hand (unknown PD counts as meeting density prongs)."""
    dens = datacenter  # density prongs only for data-center parts

    def pd_in(lo: float, hi: float | None) -> bool:
        return pd is None or (pd >= lo and (hi is None or pd < hi))

    if tpp >= 4800 or (dens and tpp >= 1600 and pd_in(5.92, None)):
        return "3A090.a"
    if dens and ((tpp >= 2400 and pd_in(1.6, 5.92)) or (tpp >= 1600 and pd_in(3.2, 5.92))):
        return "3A090.b"
    return "none"


def expected_2022(tpp: float, interconnect: float) -> str:
    return "3A090.a" if tpp >= 4800 and interconnect >= 600 else "none"


REQUIRED = [
    "A100",
    "A800",
    "H100",
    "H800",
    "H20",
    "H200",
    "L20",
    "L40S",
    "L4",
    "A10",
    "A10G",
    "T4",
    "V100",
    "Ascend910B",
    "Ascend910C",
]


def test_catalog_covers_required_parts() -> None:
    names = set(CATALOG.names())
    assert set(REQUIRED) <= names


@pytest.mark.parametrize("acc", list(CATALOG), ids=lambda a: a.name)
def test_classification_matches_thresholds(acc) -> None:  # type: ignore[no-untyped-def]
    tpp = max(tops * BITS[p] for p, tops in acc.dense_tops.items())
    pd = tpp / acc.die_area_mm2 if acc.die_area_mm2 else None
    got = classify(acc, REGIMES.get("us-ac-2023"))
    assert got.tpp == pytest.approx(tpp)
    assert (got.pd is None) == (pd is None)
    assert got.cls == expected_2023(tpp, pd, acc.datacenter)
    if pd is None and got.cls != "none" and tpp < 4800:
        assert "die area unknown" in got.reason
    old = classify(acc, REGIMES.get("us-ac-2022"))
    assert old.cls == expected_2022(tpp, acc.interconnect_gbps)


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("A100", "3A090.a"),
        ("A800", "3A090.a"),
        ("H800", "3A090.a"),
        ("H20", "none"),
        ("L20", "none"),
        ("L4", "3A090.a"),
        ("A10", "none"),
        ("T4", "none"),
        ("V100", "none"),
        ("RTX4090D", "none"),
        ("Ascend910B", "3A090.a"),
    ],
)
def test_known_verdicts(name: str, cls: str) -> None:
    acc = CATALOG.get(name)
    assert acc is not None
    assert classify(acc, REGIMES.default).cls == cls


def test_2022_rule_let_a800_and_h800_through() -> None:
    old = REGIMES.get("us-ac-2022")
    assert old is not None
    for name in ("A800", "H800"):
        acc = CATALOG.get(name)
        assert acc is not None and classify(acc, old).cls == "none"


def test_aliases_resolve() -> None:
    assert CATALOG.get("Ascend 910B") is CATALOG.get("ascend910b")
    assert CATALOG.get("A100-80GB") is not None and CATALOG.get("nonexistent") is None


def test_hardware_classify_cli_json(capsys: pytest.CaptureFixture[str], cli) -> None:  # type: ignore[no-untyped-def]
    assert (
        cli(["hardware", "classify", "--catalog", str(CONFIGS / "accelerators.yaml"), "--output", "json"])
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in rows}
    assert by_name["H20"]["class"] == "none" and by_name["H20"]["tpp"] == 2368
    assert by_name["Ascend910B"]["pd"] is None and by_name["Ascend910B"]["class"] == "3A090.a"
    assert {"name", "tpp", "pd", "class", "reason"} <= set(rows[0])


def test_hardware_classify_cli_regime(capsys: pytest.CaptureFixture[str], cli) -> None:  # type: ignore[no-untyped-def]
    args = ["hardware", "classify", "--catalog", str(CONFIGS / "accelerators.yaml"), "--output", "json"]
    assert cli([*args, "--regime", "us-ac-2022"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["A800"]["class"] == "none" and rows["A100"]["class"] == "3A090.a"
    assert cli([*args, "--regime", "nope"]) == 1


def test_aws_catalog_rows_dedupe_and_trn2() -> None:
    rows = load_instance_csv(CONFIGS / "catalog" / "aws_gpu_vms.csv")
    keys = [(r.instance_type, r.zone) for r in rows]
    assert len(keys) == len(set(keys))
    trn2 = [r for r in rows if r.instance_type == "trn2.48xlarge"]
    assert trn2 and all(r.accelerator == "Trainium2" and r.count == 16 for r in trn2)
    assert all(CATALOG.get(r.accelerator) is not None for r in rows if r.accelerator)


def test_every_command_with_output_takes_the_short_flag(cli) -> None:  # type: ignore[no-untyped-def]
    """The README: every command's `--output json` is also `-o json`."""
    from broker.cli import build_parser

    parser = build_parser()
    missing = []
    for name, sub in _subcommands(parser):
        flags = {f for a in sub._actions for f in a.option_strings}
        if "--output" in flags and "-o" not in flags:
            missing.append(name)
    assert missing == []


def _subcommands(parser, prefix: str = ""):  # type: ignore[no-untyped-def]
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix}{name}", sub
                yield from _subcommands(sub, f"{prefix}{name} ")


def test_hardware_classify_as_written_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's `szb hardware classify --output json` failed outside a checkout ("cannot read
    accelerator catalog" for configs/accelerators.yaml): the bundled catalog answers there."""
    from broker.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["hardware", "classify", "--output", "json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["H20"]["class"] == "none" and rows["Ascend910B"]["class"] == "3A090.a"


def test_hardware_classify_a_catalog_with_no_regimes_file_beside_it(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    cli,  # type: ignore[no-untyped-def]
) -> None:
    """Held-out review: `--catalog` outside configs/ failed ("regimes.yaml:1:1: cannot read regimes
    file") unless --regimes was given: the bundled regimes answer, as the bundled catalog does."""
    import shutil

    shutil.copy(CONFIGS / "accelerators.yaml", tmp_path / "accelerators.yaml")
    assert cli(["hardware", "classify", "--catalog", str(tmp_path / "accelerators.yaml"), "-o", "json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["H20"]["class"] == "none" and rows["A100"]["class"] == "3A090.a"
    missing = tmp_path / "nope.yaml"  # one named on the command line is still read, or an error
    args = [
        "hardware",
        "classify",
        "--catalog",
        str(tmp_path / "accelerators.yaml"),
        "--regimes",
        str(missing),
    ]
    assert cli(args) == 1
    assert f"{missing}:1:1: error: cannot read regimes file" in capsys.readouterr().err
