"""`szb` as users run it: validation before sending, exit codes, JSON output."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.brokerproc import JOB_PYTHON, BrokerProcess
from tests.brokerproc import szb as run_szb
from tests.e2e.conftest import TOKENS


def szb(broker: BrokerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return run_szb(broker, TOKENS["team-a"], *args, timeout=120)


def test_bad_job_file_is_rejected_before_sending_with_its_line(broker: BrokerProcess, tmp_path: Path) -> None:
    job = tmp_path / "bad.yaml"
    job.write_text(
        "name: bad-job\ncommand: [true]\nruntime_estimate: 1h\nresources:\n"
        "  accelerators: {count: -2}\ngpus: 3\n"
    )
    out = szb(broker, "submit", str(job))
    assert out.returncode == 1
    assert f"{job}:5:" in out.stderr and "resources.accelerators.count: must be >= 0" in out.stderr
    assert f"{job}:6:1: error: gpus: unknown field" in out.stderr


def test_a_date_that_is_not_one_is_reported_at_its_line(broker: BrokerProcess, tmp_path: Path) -> None:
    job = tmp_path / "deadline.yaml"
    job.write_text("name: late\ncommand: [true]\nruntime_estimate: 1h\ndeadline: 2027-13-01T08:00:00+08:00\n")
    out = szb(broker, "submit", str(job))
    assert out.returncode == 1, out.stdout
    want = f"{job}:4:11: error: YAML: '2027-13-01T08:00:00+08:00' is not a valid date or time"
    assert want in out.stderr, out.stderr


def test_true_is_not_a_number_in_a_job_file(broker: BrokerProcess, tmp_path: Path) -> None:
    """YAML's true where a count goes asked for one GPU (pydantic's lax mode read it as 1)."""
    job = tmp_path / "bools.yaml"
    job.write_text(
        "name: bools\ncommand: [true]\nruntime_estimate: 1h\nresources:\n"
        "  accelerators: {count: true}\n  nodes: false\n"
    )
    out = szb(broker, "submit", str(job))
    assert out.returncode == 1, out.stdout
    assert f"{job}:5:" in out.stderr and "resources.accelerators.count: " in out.stderr, out.stderr
    assert f"{job}:6:" in out.stderr and "resources.nodes: " in out.stderr, out.stderr
    listed = szb(broker, "list", "--output", "json")
    assert "bools" not in listed.stdout


def test_submit_wait_exit_codes_follow_the_job(broker: BrokerProcess, tmp_path: Path) -> None:
    ok = tmp_path / "ok.yaml"
    ok.write_text(f"name: cli-ok\ncommand: [{JOB_PYTHON}, -c, 'print(42)']\nruntime_estimate: 1m\n")
    bad = tmp_path / "fail.yaml"
    bad.write_text(
        f"name: cli-fail\ncommand: [{JOB_PYTHON}, -c, 'raise SystemExit(5)']\nruntime_estimate: 1m\n"
    )
    done = szb(broker, "submit", str(ok), "--wait", "--output", "json")
    assert done.returncode == 0, done.stderr
    [job] = json.loads(done.stdout[done.stdout.index("[") :])
    assert job["state"] == "SUCCEEDED" and job["exit_code"] == 0
    failed = szb(broker, "submit", str(bad), "--wait")
    assert failed.returncode == 1
    got = szb(broker, "get", job["id"], "--output", "json")
    assert got.returncode == 0 and json.loads(got.stdout)["id"] == job["id"]


def test_usage_and_server_errors(broker: BrokerProcess) -> None:
    assert szb(broker, "submit").returncode == 2  # no file: usage
    missing = szb(broker, "get", "j-nope")
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
    listed = szb(broker, "list", "--output", "json", "--state", "succeeded")
    assert listed.returncode == 0 and all(
        j["state"] == "SUCCEEDED" for j in json.loads(listed.stdout)["jobs"]
    )
