"""A policy `szb serve` refuses at start is in the policy history as refused, not as loaded.

Found by an operability review: a start whose policy dropped a site with a running job exited 1
with the right error, yet `szb policy history` listed that very policy as `loaded`; a policy that
did not even parse at start was never recorded. The README: "Every policy file the broker loads
or refuses is stored".
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import grpc

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.auth import Role, token_entry_line
from tests.brokerproc import ROOT, BrokerProcess
from tests.e2e.conftest import POLICY, PY, auth, write_broker_config
from tests.e2e.test_audit import hasher
from tests.e2e.test_jobs_api import TERMINAL, spec, submit, wait_for

OPERATOR = "token-operator-start-0123456789"
RENAMED = POLICY.replace("  - id: local\n", "  - id: host\n")
BROKEN = POLICY.replace("price_hour: 14.0", "price_hour: -3")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def serve_refused(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker.cli", "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )


def versions(stub: broker_service_pb2_grpc.BrokerServiceStub) -> dict[str, int]:
    op = (("authorization", f"Bearer {OPERATOR}"),)
    got = stub.ListPolicyVersions(pb.ListPolicyVersionsRequest(), metadata=op)
    return {v.hash: v.result for v in got.versions}


def test_policies_refused_at_start_are_recorded_as_refused(tmp_path: Path) -> None:
    config = write_broker_config(tmp_path)
    with (tmp_path / "tokens.yaml").open("a") as f:
        f.write(token_entry_line("ops", OPERATOR, Role.OPERATOR, "alice") + "\n")
    broker = BrokerProcess(config)
    broker.start()
    with grpc.insecure_channel(broker.address) as channel:
        stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
        job = submit(stub, spec("sleeper", [PY, "-c", "import time; time.sleep(600)"], gpus=1)).job.id
        wait_for(stub, job, {job_pb2.JOB_STATE_RUNNING})
    broker.stop()
    try:
        policy = tmp_path / "policy.yaml"
        policy.write_text(RENAMED)  # the running job's site is gone: refused by the site check
        refused = serve_refused(config)
        assert refused.returncode == 1 and "is gone" in refused.stderr, refused.stderr
        policy.write_text(BROKEN)  # does not load at all
        broken = serve_refused(config)
        assert broken.returncode == 1 and "price_hour" in broken.stderr, broken.stderr
        policy.write_text(POLICY)
        broker.start()
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            seen = versions(stub)
            assert seen.get(sha(RENAMED)) == pb.POLICY_LOAD_RESULT_REFUSED, seen
            assert seen.get(sha(BROKEN)) == pb.POLICY_LOAD_RESULT_REFUSED, seen
            assert seen.get(hasher(tmp_path)(POLICY)) == pb.POLICY_LOAD_RESULT_LOADED, seen
            shown = stub.GetPolicyVersion(
                pb.GetPolicyVersionRequest(hash=sha(RENAMED)[:12]),
                metadata=(("authorization", f"Bearer {OPERATOR}"),),
            ).version
            assert any("is gone" in e for e in shown.errors), shown.errors
    finally:
        (tmp_path / "policy.yaml").write_text(POLICY)
        if broker.proc is None or broker.proc.poll() is not None:
            broker.start()
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            stub.CancelJob(pb.CancelJobRequest(id=job), metadata=auth("team-a"))
            wait_for(stub, job, TERMINAL, timeout=60)
        broker.stop()
