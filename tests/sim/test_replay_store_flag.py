"""`szb policy replay --store` takes a PostgreSQL DSN: a data dir given there (the SQLite store's
flag is `--data-dir`) was handed to the PostgreSQL driver, which answered in its own terms
(`missing "=" after ".szb" in connection info string`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.cli import main

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "broker" / "defaults" / "policy.yaml"


@pytest.mark.parametrize("value", [".szb", "/var/lib/szb/broker.db", "db.example.cn"])
def test_a_path_given_as_the_store_says_which_flag_reads_it(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["policy", "replay", "--policy", str(POLICY), "--store", value]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"szb policy replay: --store {value}: not a PostgreSQL DSN (postgresql://USER@HOST:5432/DB, "
        "or key=value pairs such as host=HOST dbname=DB); a SQLite store is read with --data-dir DIR"
    ), err
