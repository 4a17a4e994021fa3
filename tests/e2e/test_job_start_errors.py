"""A local job whose program cannot start says why, with the shell's exit codes (127, 126)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.brokerproc import BrokerProcess
from tests.brokerproc import szb as run_szb
from tests.e2e.conftest import TOKENS, write_broker_config


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    # A broker whose PATH starts with a folder the job user cannot enter (root's ~/.local/bin,
    # a pyenv shim folder): the job inherits that PATH, and exec reports EACCES for it.
    private = Path(tempfile.mkdtemp(prefix="szb-private-bin-"))
    private.chmod(0o700)
    env = {"PATH": f"{private}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    proc = BrokerProcess(write_broker_config(tmp_path_factory.mktemp("broker")), extra_env=env)
    proc.start()
    yield proc
    proc.stop()
    shutil.rmtree(private, ignore_errors=True)


def szb(broker: BrokerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return run_szb(broker, TOKENS["team-a"], *args, timeout=120)


def _run(broker: BrokerProcess, job: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, object]]:
    out = szb(broker, "submit", str(job), "--wait")
    listed = json.loads(szb(broker, "list", "--output", "json").stdout)["jobs"]
    [final] = [j for j in listed if j["spec"]["name"] == job.stem]
    return out, final


def test_a_misspelt_program_is_not_found_not_permission_denied(broker: BrokerProcess, tmp_path: Path) -> None:
    job = tmp_path / "typo.yaml"
    job.write_text("name: typo\ncommand: [pyhton3-no-such-program, train.py]\nruntime_estimate: 1m\n")
    out, final = _run(broker, job)
    assert out.returncode == 1
    assert final["state"] == "FAILED" and final["exit_code"] == 127, final
    tail = str(final["log_tail"])
    assert "not found" in tail and "pyhton3-no-such-program" in tail, tail
    assert "Permission denied" not in tail, tail
    assert "not found" in out.stdout


def test_a_program_that_is_not_executable_is_126(broker: BrokerProcess, tmp_path: Path) -> None:
    folder = Path(tempfile.mkdtemp(prefix="szb-noexec-"))
    try:
        folder.chmod(0o755)
        script = folder / "train.sh"
        script.write_text("#!/bin/sh\necho never\n")
        script.chmod(0o644)
        job = tmp_path / "noexec.yaml"
        job.write_text(f"name: noexec\ncommand: [{script}]\nruntime_estimate: 1m\n")
        out, final = _run(broker, job)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert out.returncode == 1
    assert final["state"] == "FAILED" and final["exit_code"] == 126, final
    assert "Permission denied" in str(final["log_tail"]), final
