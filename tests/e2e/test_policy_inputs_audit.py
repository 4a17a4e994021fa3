"""Held-out review (issues 12 and 3): an edit of accelerators.yaml alone (a part's TPP, die area or
`datacenter` flag) can turn an export-control refusal into a placement, yet the policy hash that
decisions record and `szb policy history` lists is the policy file's own, unchanged. The history
stored the referenced files' digest but never showed it: two entries of one hash looked the same,
so an operator could not tell that the files behind a decision had changed."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import grpc

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc
from broker.auth import Role, token_entry_line
from tests.brokerproc import ROOT, BrokerProcess
from tests.e2e.conftest import write_broker_config
from tests.e2e.test_audit import szb

OPERATOR = "token-operator-inputs-0123456789"
OP = (("authorization", f"Bearer {OPERATOR}"),)


def loaded(stub: broker_service_pb2_grpc.BrokerServiceStub) -> list[pb.PolicyVersion]:
    got = stub.ListPolicyVersions(pb.ListPolicyVersionsRequest(page_size=50), metadata=OP, timeout=10)
    return [v for v in got.versions if v.result == pb.POLICY_LOAD_RESULT_LOADED]


def test_history_tells_apart_two_loads_of_one_policy_hash_whose_catalog_differs(tmp_path: Path) -> None:
    config = write_broker_config(tmp_path)
    catalog = tmp_path / "accelerators.yaml"  # beside the policy: used instead of the bundled one
    catalog.write_text((ROOT / "broker/defaults/accelerators.yaml").read_text())
    with (tmp_path / "tokens.yaml").open("a") as f:
        f.write(token_entry_line("ops", OPERATOR, Role.OPERATOR, "alice") + "\n")
    proc = BrokerProcess(config)
    proc.start(timeout=120)
    try:
        with grpc.insecure_channel(proc.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            first = loaded(stub)
            assert len(first) == 1, first
            text = catalog.read_text()
            catalog.write_text(text.replace("memory_gb: 80", "memory_gb: 81", 1))
            deadline = time.monotonic() + 30
            while len(versions := loaded(stub)) < 2:
                assert time.monotonic() < deadline, "the catalog edit was not loaded"
                time.sleep(0.2)
            cli = szb("policy", "history", "--server", proc.address, token=OPERATOR)
    finally:
        proc.stop()
    new, old = versions[0], versions[1]
    assert new.hash == old.hash, versions  # the policy file itself did not change
    assert new.inputs_digest and old.inputs_digest and new.inputs_digest != old.inputs_digest, versions
    assert isinstance(cli, subprocess.CompletedProcess) and cli.returncode == 0, cli.stderr
    for v in versions:
        assert v.inputs_digest[:12] in cli.stdout, cli.stdout
