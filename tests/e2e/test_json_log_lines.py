"""Held-out review (issues 12 and 3): under `--log-format json` (or `SZB_LOG_FORMAT=json`, as the
container sets it) every line the broker writes is a JSON record, a fatal stop included, and an
operator's drain and undrain are records with their fields, not text a pipeline must parse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import grpc

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc
from broker.auth import Role, token_entry_line
from tests.brokerproc import BrokerProcess
from tests.e2e.conftest import write_broker_config
from tests.e2e.test_drain import wait_for

ROOT = Path(__file__).resolve().parents[2]
OPERATOR = "token-operator-jsonlog-0123456789"


def serve(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker.cli", "serve", *argv],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=90, cwd=ROOT,
    )  # fmt: skip


def records(text: str) -> list[dict[str, object]]:
    """Every non-empty line of `text` as a JSON object (a line that is not one fails the test)."""
    out = []
    for line in text.splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"not a JSON record under --log-format json: {line!r}") from None
    return out


def test_a_fatal_stop_writes_only_json_lines(tmp_path: Path) -> None:
    """The CRITICAL `stopped` record was followed by szb's plain `szb: error: broker stopped: ...`
    line on the same stderr: the one line a JSON pipeline cannot parse, at every failed start."""
    config = write_broker_config(tmp_path)
    (tmp_path / "policy.yaml").write_text("\tnot: a policy\n")
    done = serve(["--config", str(config), "--listen", "127.0.0.1:0", "--log-format", "json"], {})
    assert done.returncode == 1, done.stderr
    stopped = [r for r in records(done.stderr) if r.get("event") == "stopped"]
    assert len(stopped) == 1 and stopped[0]["level"] == "CRITICAL", done.stderr
    assert "policy.yaml:1:1" in str(stopped[0]["message"]), stopped
    records(done.stdout)


def test_a_broken_broker_yaml_is_a_json_record_when_the_environment_asks_for_json(tmp_path: Path) -> None:
    """The container sets SZB_LOG_FORMAT=json: a broker.yaml it cannot read (a bad mount, a typo)
    was reported as a plain line only, before the log was configured."""
    config = tmp_path / "broker.yaml"
    config.write_text("data_dir: [data\n")
    for argv, env in (
        (["--config", str(config)], {"SZB_LOG_FORMAT": "json"}),
        (["--config", str(config), "--log-format", "json"], {}),
        (["--config", str(tmp_path / "missing.yaml")], {"SZB_LOG_FORMAT": "json"}),
    ):
        done = serve(argv, env)
        assert done.returncode == 1, done.stderr
        got = records(done.stderr)
        assert [r.get("event") for r in got] == ["stopped"], done.stderr
        assert got[0]["level"] == "CRITICAL" and "broker stopped:" in str(got[0]["message"]), got
    # The text form is unchanged: szb's one error line.
    done = serve(["--config", str(config)], {"SZB_LOG_FORMAT": ""})
    assert done.returncode == 1 and done.stderr.startswith(f"szb: error: {config}:"), done.stderr


def test_drain_and_undrain_are_structured_records(tmp_path: Path) -> None:
    """`site local drained by alice: ...` carried no `event`, `site` or `by` field, as every other
    operator action's line does (cancel has `event: cancelled` and `by`)."""
    config = write_broker_config(tmp_path)
    with (tmp_path / "tokens.yaml").open("a") as f:
        f.write(token_entry_line("ops", OPERATOR, Role.OPERATOR, "alice") + "\n")
    proc = BrokerProcess(config, extra_env={"SZB_LOG_FORMAT": "json"})
    proc.start(timeout=120)
    op = (("authorization", f"Bearer {OPERATOR}"),)
    try:
        with grpc.insecure_channel(proc.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            stub.DrainSite(pb.DrainSiteRequest(site="local", reason="rack 4 firmware"), metadata=op)
            stub.UndrainSite(pb.UndrainSiteRequest(site="local"), metadata=op)

            def both() -> list[dict[str, object]]:
                got = [json.loads(line) for line in "".join(proc.output).splitlines()
                       if line.startswith("{")]
                return [r for r in got if r.get("event") in ("drained", "undrained")]

            seen = wait_for(lambda: len(both()) == 2 and both())
    finally:
        proc.stop()
    drained, undrained = seen
    assert drained["event"] == "drained" and undrained["event"] == "undrained", seen
    for r in seen:
        assert r["site"] == "local" and r["by"] == "alice", r
    assert drained["reason"] == "rack 4 firmware", drained
