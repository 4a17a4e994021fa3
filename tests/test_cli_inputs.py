"""Client-side inputs that ended in a traceback, a read without end, or a silent wrong answer
(an adversarial pass over the CLI): each is now a one-line usage or file error, before any call."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.cli import build_parser, main
from broker.commands._args import AGE_OPTIONS, parse_since

ROOT = Path(__file__).resolve().parents[1]
HELLO = str(ROOT / "configs/examples/hello.yaml")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """`szb ARGV` in process: its exit code (a usage error's too) and stderr."""
    try:
        code = main(list(argv))
    except SystemExit as exc:  # (argparse's usage errors)
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def test_a_job_file_that_is_not_utf8_names_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = tmp_path / "job.yaml"
    job.write_bytes(b"name: x\ncommand: [\xff\xfe]\n")  # (a UnicodeDecodeError traceback)
    for argv in (["submit", str(job)], ["explain", str(job), "--policy", str(ROOT / "configs/policy.yaml"),
                                        "--tenant", "pku-nlp"]):  # fmt: skip
        code, err = run(capsys, *argv)
        assert code != 0 and f"{job}:2:1: error: job file is not UTF-8" in err, err
        assert "Traceback" not in err
    code, err = run(capsys, "policy", "test", str(ROOT / "configs/policy.yaml"), str(job))
    assert code != 0 and f"{job}:2:1: error: tests file is not UTF-8" in err, err


def test_a_job_file_larger_than_any_spec_is_not_read_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `szb submit /dev/zero` read until memory ran out; the largest spec a server takes is 16 MiB.
    big = tmp_path / "big.yaml"
    with big.open("wb") as f:
        f.truncate(64 * 2**20)  # (sparse: nothing written)
    code, err = run(capsys, "submit", str(big))
    assert code != 0 and f"{big}:1:1: error: larger than 16 MiB: not a job file" in err, err


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        # OverflowError: date value out of range
        (["spend", "--since", "99999999d"], "'99999999d': an age must be at most 10 years"),
        (["spend", "--until", "junk"], "'junk' is neither a time"),
        # (read as 7 seconds and 20,261,208 seconds: a held-out review meant a week and a date)
        (["spend", "--since", "7"], "'7': an age needs a unit (7d, 12h, 30m, 45s)"),
        (["spend", "--since", "7.5"], "'7.5': an age needs a unit"),
        # ("argument --since: expected one argument": argparse took `-1d` for an option)
        (["spend", "--since", "-1d"], "argument --since: '-1d': an age is positive, like 7d"),
        (["audit", "--since", "-2h"], "argument --since: '-2h': an age is positive, like 7d"),
        # (the same, for the other option taking an age: "argument --until: expected one argument")
        (["spend", "--until", "-1d"], "argument --until: '-1d': an age is positive, like 7d"),
        (["audit", "--until", "-3h"], "argument --until: '-3h': an age is positive, like 7d"),
        # ValueError: Value out of range (int64 on the wire)
        (["watch", "j-1", "--after", "99999999999999999999"], "must be at most 9223372036854775807"),
        (["watch", "j-1", "--after", "-1"], "argument --after: must be >= 0, got -1"),
        # UnicodeEncodeError: surrogates not allowed
        (["get", "j-\udcff"], "is not a job id: not UTF-8 text"),
        (["cancel", "j-\udcff"], "is not a job id: not UTF-8 text"),
        (["audit", "--job", "j-\udcff"], "is not a job id: not UTF-8 text"),
        # (accepted: a check that gave up before asking, or waited for ever)
        (["health", "--timeout", "0"], "must be a number of seconds above 0, at most 86400, got 0"),
        (["health", "--timeout", "-1"], "got -1"),
        (["health", "--timeout", "inf"], "got inf"),
        (["health", "--timeout", "1e10"], "got 1e10"),  # (an instant DEADLINE_EXCEEDED)
        # (accepted: -1 showed all rows but the last, "... 6 more offers"; 0 a table of none)
        (["explain", HELLO, "--limit", "-1"], "argument --limit: must be >= 1, got -1"),
        (["explain", HELLO, "--limit", "0"], "argument --limit: must be >= 1, got 0"),
        # ValueError: Value out of range (int64 / int32 on the wire)
        (["logs", "j-1", "--tail", "99999999999999999999"], "argument --tail: must be at most 9223372036"),
        (["logs", "j-1", "--tail", "-1"], "argument --tail: must be >= 0, got -1"),
        (["list", "--page-size", "99999999999"], "argument --page-size: must be at most 2147483647, got"),
        (["policy", "history", "--limit", "99999999999"], "argument --limit: must be at most 2147483647"),
        (["audit", "--limit", "-3"], "argument --limit: must be >= 0, got -3"),
    ],
)
def test_a_bad_flag_is_a_usage_error(argv: list[str], said: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(capsys, *argv)
    assert code == 2 and said in err and "Traceback" not in err, err


def _options(parser: argparse.ArgumentParser, path: str = "szb") -> Iterator[tuple[str, argparse.Action]]:
    """(command, option) for every option of every command and subcommand."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _options(child, f"{path} {name}")
        elif action.option_strings:
            yield path, action


def test_every_option_taking_an_age_takes_one_written_with_a_minus() -> None:
    # `--until -1d` was "expected one argument" where `--since -1d` said what was wrong.
    ages = {
        (command, action.option_strings[-1])
        for command, action in _options(build_parser())
        if action.type is parse_since or action.dest in ("since", "until")
    }
    assert {"szb audit", "szb spend", "szb policy replay"} <= {command for command, _ in ages}
    assert {option for _, option in ages} <= set(AGE_OPTIONS), ages


SCENARIO_FLAGS = {("szb simulate", flag) for flag in ("--time-scale", "--onprem-gpus", "--seed")}
"""Checked as the scenario file's values are, a refused one a usage error (tests/sim/test_simulate_args)."""


def test_no_option_takes_an_unchecked_number() -> None:
    # A bare `type=int` took `explain --limit -1` (and `logs --tail` past int64, a traceback):
    # each number an option takes is checked for what it means, as a usage error.
    bare = {
        (command, action.option_strings[-1])
        for command, action in _options(build_parser())
        if action.type in (int, float)
    }
    assert bare <= SCENARIO_FLAGS, bare - SCENARIO_FLAGS


def test_policy_replay_since_a_bare_number_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(capsys, "policy", "replay", "--policy", "p.yaml", "--since", "86400")
    assert code == 1 and "--since: '86400': an age needs a unit" in err, err


def test_one_label_given_two_values_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    # One value per key went to the server, the last given: the answer depended on flag order.
    code, err = run(capsys, "list", "--label", "example=yes", "--label", "example=no")
    assert code == 2 and "--label example given twice ('yes', 'no')" in err, err


@pytest.mark.parametrize("item", ["=x", "Team=x", "a b=x"])
def test_a_label_of_a_key_no_job_can_have_is_refused(item: str, capsys: pytest.CaptureFixture[str]) -> None:
    # (`--label =x` listed nothing, exit 0: as if no job had the label)
    code, err = run(capsys, "list", "--label", item, "--server", "127.0.0.1:1")
    key = item.partition("=")[0]
    assert code == 2 and f"szb: usage error: --label {item!r}: {key!r} is not a label key" in err, err


@pytest.mark.parametrize("tenant", ["", "a\nb", "Pku NLP"])
def test_a_token_for_a_tenant_id_no_policy_can_have_is_refused(
    tenant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # '' made an entry the tokens file then refused (a broker with it would not start); a newline
    # was folded into a space by YAML.
    code, err = run(capsys, "token", "--tenant", tenant)
    assert code == 1 and "a tenant id is lowercase letters, digits and '-'" in err, err
    assert capsys.readouterr().out == ""


def test_an_offline_explain_names_a_misspelt_accelerator_as_submission_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It said only "hardware.fit: the job accepts H1OO", where a live submit says what was meant.
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: x\ncommand: [echo]\nruntime_estimate: 1h\n"
        "resources:\n  accelerators: {count: 1, any_of: [H1OO]}\n"
    )
    code, err = run(capsys, "explain", str(job), "--policy", str(ROOT / "configs/policy.yaml"),
                    "--tenant", "pku-nlp")  # fmt: skip
    assert code == 1, err
    said = "resources.accelerators.any_of[0]: unknown accelerator 'H1OO' (did you mean 'H100'?)"
    assert f"{job}: error: {said}" in err, err


def test_a_store_dsn_the_broker_cannot_use_is_named_without_its_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held-out review (issue 12): the fatal line quoted psycopg's error, the DSN in it whole:
    `... in URI: "postgres://szb:Sup3rS3cret@[::1:5432/szb"`."""
    from tests.e2e.conftest import write_broker_config

    config = write_broker_config(tmp_path)
    monkeypatch.setenv("SZB_STORE_DSN", "postgres://szb:Sup3rS3cret@[::1:5432/szb")
    code, err = run(capsys, "serve", "--config", str(config))
    assert code == 1 and "szb: error: broker stopped:" in err, err
    assert "Sup3rS3cret" not in err and "postgres://szb:[REDACTED]@" in err, err


def test_with_json_logs_the_reason_the_broker_stopped_is_a_record(tmp_path: Path) -> None:
    """Held-out review (issue 12): with `--log-format json` the fatal reason was only szb's plain
    error line, which a JSON log pipeline drops: the one line that explains the crash."""
    import json
    import os
    import subprocess
    import sys

    from tests.e2e.conftest import write_broker_config

    config = write_broker_config(tmp_path)
    env = {**os.environ, "SZB_STORE_DSN": "postgres://szb:Sup3rS3cret@[::1:5432/szb"}
    argv = [sys.executable, "-m", "broker.cli", "serve", "--config", str(config), "--log-format", "json"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 1, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    stopped = [r for r in records if r.get("event") == "stopped"]
    assert stopped and "broker stopped:" in stopped[0]["message"], done.stderr
    assert "Sup3rS3cret" not in done.stderr


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("data_dir: data\ndata_dir: data2\n", ":2:1: YAML: while constructing a mapping begun at 1:1"),
        ("data_dir: [data\nx: 1\n", ":2:2: YAML: while parsing a flow sequence begun at 1:11"),
    ],
)
def test_a_broken_broker_yaml_is_one_line_naming_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, said: str
) -> None:
    """Held-out review (issue 2): a duplicate key printed ruamel's multi-line dump ending in "To
    suppress this check see: https://yaml.dev/...", where the policy and job files say FILE:LINE:COL."""
    config = tmp_path / "broker.yaml"
    config.write_text(text)
    code, err = run(capsys, "serve", "--config", str(config))
    assert code == 1 and err.startswith(f"szb: error: {config}{said}"), err
    assert len(err.strip().splitlines()) == 1 and "yaml.dev" not in err, err


def test_a_broker_yaml_not_utf8_or_with_an_unknown_tag_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Self-review: bytes that are not UTF-8 ended in a traceback, and an unknown tag in a
    multi-line message naming "<unicode string>" rather than the file."""
    config = tmp_path / "broker.yaml"
    config.write_bytes(b"data_dir: caf\xe9\n")
    code, err = run(capsys, "serve", "--config", str(config))
    assert code == 1 and err == f"szb: error: {config}: not UTF-8 text (byte 13)\n", err
    config.write_text("x: !!python/object:os.system ls\n")
    code, err = run(capsys, "serve", "--config", str(config))
    assert code == 1 and err.startswith(f"szb: error: {config}:1:4: YAML: could not determine"), err
    assert len(err.strip().splitlines()) == 1 and "unicode string" not in err, err
