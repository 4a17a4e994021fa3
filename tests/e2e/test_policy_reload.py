"""Hot reload through the running broker: good policies swap in, bad ones are refused."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import grpc

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc
from tests.brokerproc import BrokerProcess
from tests.e2e.conftest import POLICY, PY, auth, write_broker_config
from tests.e2e.test_jobs_api import TERMINAL, spec, submit, wait_for


def policy_hash(stub: broker_service_pb2_grpc.BrokerServiceStub) -> str:
    return stub.GetStatus(pb.GetStatusRequest(), metadata=auth("team-a")).policy_hash


def wait_hash(stub: broker_service_pb2_grpc.BrokerServiceStub, old: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while (current := policy_hash(stub)) == old:
        assert time.monotonic() < deadline, "the new policy was never swapped in"
        time.sleep(0.2)
    return current


def test_reload_on_change_refuses_bad_files_and_honours_sighup(tmp_path: Path) -> None:
    broker = BrokerProcess(write_broker_config(tmp_path))
    broker.start()
    policy = tmp_path / "policy.yaml"
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            first = policy_hash(stub)
            policy.write_text(POLICY.replace("price_hour: 14.0", "price_hour: 15.0"))
            second = wait_hash(stub, first)
            job = submit(stub, spec("after-reload", [PY, "-c", "pass"], gpus=1)).job
            assert wait_for(stub, job.id, TERMINAL).policy_hash == second

            policy.write_text(POLICY.replace("adapter: local", "adapter: [local"))  # broken YAML
            time.sleep(3.0)
            assert policy_hash(stub) == second, "a broken policy replaced the last good one"
            log = (tmp_path / "broker.log").read_text()
            assert "policy reload refused" in log and f"{policy}:" in log

            # Written without a change of size or mtime granularity mattering: SIGHUP forces it.
            policy.write_text(POLICY.replace("price_hour: 14.0", "price_hour: 16.0"))
            assert broker.proc is not None
            broker.proc.send_signal(signal.SIGHUP)
            third = wait_hash(stub, second)
            assert third not in (first, second)
    finally:
        broker.stop()
