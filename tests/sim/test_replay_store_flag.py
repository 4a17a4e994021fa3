"""`szb policy replay --store` takes a PostgreSQL DSN: a data dir given there (the SQLite store's
flag is `--data-dir`) was handed to the PostgreSQL driver, which answered in its own terms
(`missing "=" after ".szb" in connection info string`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.cli import main

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "broker" / "defaults" / "policy.yaml"


@pytest.mark.parametrize("value", [".szb", "/var/lib/szb/broker.db", "db.example.cn", "sqlite:///x.db"])
def test_a_path_given_as_the_store_says_which_flag_reads_it(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["policy", "replay", "--policy", str(POLICY), "--store", value]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"szb policy replay: --store {value}: not a PostgreSQL DSN (postgresql://USER@HOST:5432/DB, "
        "or key=value pairs such as host=HOST dbname=DB); a SQLite store is read with --data-dir DIR"
    ), err


def test_the_since_help_says_a_time_without_an_offset_is_beijing_time(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--since 2026-12-04T00:02` reads as Beijing time (8 h before the same UTC time), as every
    --since of the CLI does; the help said only "or a time", and the refusal then spoke UTC."""
    with pytest.raises(SystemExit):
        main(["policy", "replay", "--help"])
    assert "Beijing time unless it gives an offset" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(
    ("since", "said"),
    [
        # A duration too long was "neither a time nor an age"; an unknown unit named no units.
        ("100000d", "--since: '100000d': an age must be at most 10 years"),
        ("1y", "nor an age (2h, 1d; units d, h, m, s)"),
        # (review 58: argparse took `-1d` for an option, "argument --since: expected one argument")
        ("-1d", "szb policy replay: --since: '-1d': an age is positive, like 7d"),
    ],
)
def test_a_since_that_is_no_age_says_why(since: str, said: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "replay", "--policy", str(POLICY), "--since", since]) == 1
    assert said in capsys.readouterr().err


def test_a_duration_with_an_unknown_unit_names_the_units() -> None:
    from broker.durations import parse_duration

    with pytest.raises(ValueError, match=r"\(units d, h, m, s, each once, largest first\)"):
        parse_duration("9y")


@pytest.mark.parametrize("text", ["1h1h", "30m1h", "1s1d"])
def test_a_unit_written_twice_or_out_of_order_is_refused(text: str) -> None:
    # "1h1h" used to read as 2h and "30m1h" as 1h30m: a typo taken at its sum.
    from broker.durations import parse_duration

    with pytest.raises(ValueError, match="each once, largest first"):
        parse_duration(text)
