"""`szb submit --wait` (and `szb watch`) when the broker goes away mid-watch: one `szb: error:` line
and exit 1, not a Python traceback (held-out review: after the stream's error was said, the final
`get` raised ClientError unguarded). A job's output printed by `szb get`/`watch` shows its control
characters as `\\xNN`: a job could retitle or clear an operator's terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from broker.commands._output import shown_output
from tests.brokerproc import JOB_PYTHON, ROOT, BrokerProcess
from tests.e2e.conftest import TOKENS, write_broker_config


@pytest.mark.parametrize("command", ["submit --wait", "watch"])
def test_a_wait_whose_broker_dies_ends_with_one_error_line(tmp_path: Path, command: str) -> None:
    """Review: `szb watch` (not `submit --wait`) exited 0 after saying the broker was gone."""
    broker = BrokerProcess(write_broker_config(tmp_path))
    broker.start()
    job = tmp_path / "long.yaml"
    # Long enough to be running when the broker dies, short enough to end by itself within the
    # grace the leftover-jobs check gives (a local job outlives its broker by design; a 60 s job
    # was still running when the check looked, in a CI run where szb gave up quickly).
    sleep = f"[{JOB_PYTHON}, -c, 'import time; time.sleep(15)']"
    job.write_text(f"name: long\ncommand: {sleep}\nruntime_estimate: 5m\n")
    env = {**os.environ, "SZB_SERVER": broker.address, "SZB_TOKEN": TOKENS["team-a"]}
    env["GRPC_VERBOSITY"] = "ERROR"
    args = ["submit", str(job), "--wait"]
    if command == "watch":
        submitted = subprocess.run(
            [sys.executable, "-m", "broker.cli", "submit", str(job), "-o", "json"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        args = ["watch", json.loads(submitted.stdout)[0]["id"]]
    waiting = subprocess.Popen(
        [sys.executable, "-m", "broker.cli", *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    seen = []
    try:
        assert waiting.stdout is not None
        for line in waiting.stdout:  # the watch's own lines, until the job runs
            seen.append(line)
            if "RUNNING" in line:
                break
    finally:
        broker.kill()
    out, err = waiting.communicate(timeout=120)
    out = "".join(seen) + out
    assert "RUNNING" in out, out
    assert waiting.returncode == 1, (out, err)
    assert "Traceback" not in err and "ClientError" not in err, err
    assert err.startswith("szb: error: "), err
    # Said once: the final `get` repeated the stream's UNAVAILABLE line (held-out review).
    assert err.count("szb: error: ") == 1, err


def test_a_jobs_control_characters_are_shown_not_sent_to_the_terminal() -> None:
    said = shown_output("ok\x1b]0;pwned\x07 done\r\nnext\rover\ttab\x9b")
    assert said == "ok\\x1b]0;pwned\\x07 done\nnext\\x0dover\ttab\\x9b"
    # A right-to-left override shows the rest of its line backwards (held-out review).
    assert shown_output("ok \u202egpj.exe\u2066") == "ok \\u202egpj.exe\\u2066"
