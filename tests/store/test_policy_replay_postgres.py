"""`szb policy replay --store DSN`: the same replay read from a PostgreSQL store a broker wrote."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc

from broker.api import broker_service_pb2_grpc, job_pb2
from tests.brokerproc import JOB_PYTHON, ROOT, BrokerProcess
from tests.e2e.conftest import write_broker_config
from tests.e2e.test_jobs_api import TERMINAL, spec, submit, wait_for


def replay(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker.cli", "policy", "replay", *args],
        cwd=cwd,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_replay_reads_a_postgres_store(tmp_path: Path, pg_dsn: str) -> None:
    config = write_broker_config(tmp_path)
    config.write_text(config.read_text() + f"store: {{dsn: '{pg_dsn}'}}\n")
    broker = BrokerProcess(config)
    broker.start()
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            for name in ("pg-one", "pg-two"):
                job = submit(stub, spec(name, [JOB_PYTHON, "-c", "print(1)"])).job
                assert wait_for(stub, job.id, TERMINAL).state == job_pb2.JOB_STATE_SUCCEEDED
            try:  # refused at the door: no job row, only the audit trail's record, copied too
                submit(stub, spec("pg-huge", [JOB_PYTHON, "-c", "print(1)"], gpus=512))
                raise AssertionError("a 512-GPU job was admitted")
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION, exc
    finally:
        broker.stop()
    policy = (tmp_path / "policy.yaml").read_text()
    # The candidate no longer serves team-a (the tenant the jobs were submitted as).
    (tmp_path / "candidate.yaml").write_text(
        policy.replace("  - {id: team-a, kind: university, entity_country: CN}\n", "")
    )
    out = replay(tmp_path, "--policy", "candidate.yaml", "--store", pg_dsn, "--output", "json")
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["jobs"] == 3 and body["actual_runtimes"] == 2 and body["refused_at_submit"] == 1
    assert sorted(r["name"] for r in body["refusals_new"]) == ["pg-one", "pg-two"]
    assert body["current"]["rejected"] == 1 and body["candidate"]["rejected"] == 3
    same = replay(tmp_path, "--policy", "policy.yaml", "--store", pg_dsn, "--output", "json")
    assert same.returncode == 0, same.stderr
    assert json.loads(same.stdout)["refusals_new"] == []
