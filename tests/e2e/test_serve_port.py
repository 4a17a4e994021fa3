"""`szb serve --listen` on a port another broker already serves is refused, not shared."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from broker.api import broker_service_pb2 as pb
from tests.brokerproc import ROOT, BrokerProcess, stub_for
from tests.e2e.conftest import auth, write_broker_config


def test_a_second_broker_on_a_busy_port_is_refused(tmp_path: Path) -> None:
    first = BrokerProcess(write_broker_config(tmp_path / "first"))
    first.start()
    try:
        # Another broker (its own store) started on the same address by mistake: sharing the
        # port would hand each client connection to either broker, so jobs would come and go.
        second = write_broker_config(tmp_path / "second")
        try:
            out = subprocess.run(
                [sys.executable, "-m", "broker.cli", "serve", "--config", str(second),
                 "--listen", first.address],
                cwd=ROOT, capture_output=True, text=True, timeout=30,
            )
            code, stderr = out.returncode, out.stderr
        except subprocess.TimeoutExpired as exc:  # it kept serving: stopped by the timeout
            code, stderr = None, str(exc.stderr)
        assert code == 1, f"the second broker served on {first.address}: {stderr}"
        assert first.address in stderr and "in use" in stderr, stderr
        with stub_for(first.address) as stub:  # the first broker keeps answering on its port
            stub.ListJobs(pb.ListJobsRequest(), metadata=auth("team-a"), timeout=10)
    finally:
        first.stop()
