"""`szb status` of a broker with no jobs says so, as its other lines do ("Jobs:" was left empty)."""

from __future__ import annotations

from pathlib import Path

from tests.brokerproc import BrokerProcess, szb
from tests.e2e.conftest import TOKENS, write_broker_config


def test_status_of_a_broker_without_jobs_says_none(tmp_path: Path) -> None:
    broker = BrokerProcess(write_broker_config(tmp_path))
    broker.start()
    try:
        out = szb(broker, TOKENS["team-a"], "status")
    finally:
        broker.stop()
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "Jobs: none" in lines and "Active by site: none" in lines, out.stdout
