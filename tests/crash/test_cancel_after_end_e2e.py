"""A job that ended on its own before the broker read its result keeps that result when a cancel
comes next (held-out review: four of four such jobs were recorded CANCELLED, their exit code
gone). A real `szb serve` that reads results only every 30 s; the cancel goes through the CLI."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.brokerproc import JOB_PYTHON, BrokerProcess, szb
from tests.e2e.conftest import TOKENS, write_broker_config

TOKEN = TOKENS["team-a"]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    config = write_broker_config(tmp_path / "b")
    config.write_text(config.read_text().replace("poll_interval_s: 0.2", "poll_interval_s: 30"))
    proc = BrokerProcess(config)
    proc.start()
    yield proc
    proc.stop()


def get(broker: BrokerProcess, job_id: str) -> dict[str, Any]:
    out = szb(broker, TOKEN, "get", job_id, "-o", "json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    return dict(got[0] if isinstance(got, list) else got)


def test_a_cancel_after_the_job_ended_keeps_its_result(broker: BrokerProcess, tmp_path: Path) -> None:
    job = tmp_path / "quick.yaml"
    job.write_text(f"name: quick\ncommand: [{JOB_PYTHON}, -c, 'print(42)']\nruntime_estimate: 1m\n")
    [created] = json.loads(szb(broker, TOKEN, "submit", str(job), "-o", "json").stdout)
    data = broker.config.parent / "data" / "local"
    deadline = time.monotonic() + 60
    while not list(data.glob(f"{created['id']}-a*/exit_code")):  # ended; the broker reads it in 30 s
        assert time.monotonic() < deadline, "the job never ended"
        time.sleep(0.1)
    assert get(broker, created["id"])["state"] in ("PROVISIONING", "RUNNING")  # not read yet
    cancelled = szb(broker, TOKEN, "cancel", created["id"])
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"{created['id']} had already ended (SUCCEEDED): nothing cancelled" in cancelled.stderr
    got = get(broker, created["id"])
    assert got["state"] == "SUCCEEDED" and got.get("exit_code", 0) == 0, got
