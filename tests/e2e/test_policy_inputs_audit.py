"""Held-out review (issues 12 and 3): an edit of accelerators.yaml alone (a part's TPP, die area,
`datacenter` flag or flags) can turn an export-control refusal into a placement, yet the policy hash
that decisions record was the policy file's own, unchanged: two decisions on different data named
one hash, and `szb policy show HASH` gave only the policy file. The hash now covers the policy file
and the files it refers to, and the stored version keeps those files' contents."""

from __future__ import annotations

import hashlib
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
from tests.e2e.test_policy_reload_inputs import RULE, explain

OPERATOR = "token-operator-inputs-0123456789"
OP = (("authorization", f"Bearer {OPERATOR}"),)
Stub = broker_service_pb2_grpc.BrokerServiceStub


def loaded(stub: Stub) -> list[pb.PolicyVersion]:
    got = stub.ListPolicyVersions(pb.ListPolicyVersionsRequest(page_size=50), metadata=OP, timeout=10)
    return [v for v in got.versions if v.result == pb.POLICY_LOAD_RESULT_LOADED]


def stored_files(stub: Stub, policy_hash: str) -> dict[str, str]:
    got = stub.GetPolicyVersion(pb.GetPolicyVersionRequest(hash=policy_hash), metadata=OP, timeout=10)
    assert got.version.hash == policy_hash
    for f in got.version.files:
        assert f.sha256 == hashlib.sha256(f.content.encode()).hexdigest(), f.name
    return {f.name: f.content for f in got.version.files}


def start(tmp_path: Path) -> tuple[BrokerProcess, Path]:
    config = write_broker_config(tmp_path)
    catalog = tmp_path / "accelerators.yaml"  # beside the policy, which names it
    catalog.write_text((ROOT / "broker/defaults/accelerators.yaml").read_text())
    with (tmp_path / "tokens.yaml").open("a") as f:
        f.write(token_entry_line("ops", OPERATOR, Role.OPERATOR, "alice") + "\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy.read_text() + RULE)
    proc = BrokerProcess(config)
    proc.start(timeout=120)
    return proc, catalog


def test_a_decision_on_an_edited_accelerator_catalog_names_another_policy_hash(tmp_path: Path) -> None:
    proc, catalog = start(tmp_path)
    try:
        with grpc.insecure_channel(proc.address) as channel:
            stub = Stub(channel)
            before = explain(stub).explanation
            assert before.allowed_offers > 0
            old_text = catalog.read_text()
            marker = "    provenance: quoted-datasheet\n  - name: H100\n"
            assert marker in old_text
            new_text = old_text.replace(marker, "    flags: [retired]\n" + marker, 1)
            catalog.write_text(new_text)
            deadline = time.monotonic() + 30
            while (after := explain(stub).explanation).allowed_offers:
                assert time.monotonic() < deadline, "the edited accelerator catalog never came into force"
                time.sleep(0.2)
            status = stub.GetStatus(pb.GetStatusRequest(), metadata=OP, timeout=10)
            old_files = stored_files(stub, before.policy_hash)
            new_files = stored_files(stub, after.policy_hash)
            shown = szb("policy", "show", before.policy_hash[:12], "--file", "accelerators.yaml",
                        "--server", proc.address, token=OPERATOR)
            listed = szb("policy", "show", after.policy_hash[:12], "--server", proc.address, token=OPERATOR)
    finally:
        proc.stop()
    # Two decisions on different data name different hashes, and each hash finds its own data.
    assert after.policy_hash != before.policy_hash and status.policy_hash == after.policy_hash
    assert old_files["accelerators.yaml"] == old_text and new_files["accelerators.yaml"] == new_text
    assert "regimes.yaml" in new_files
    assert shown.returncode == 0 and shown.stdout == old_text, shown.stderr
    assert listed.returncode == 0 and "accelerators.yaml" in listed.stderr, listed.stderr


def test_history_tells_apart_two_loads_whose_catalog_differs(tmp_path: Path) -> None:
    proc, catalog = start(tmp_path)
    try:
        with grpc.insecure_channel(proc.address) as channel:
            stub = Stub(channel)
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
    assert new.hash != old.hash, versions  # the policy file is the same; what it refers to is not
    assert new.inputs_digest and old.inputs_digest and new.inputs_digest != old.inputs_digest, versions
    assert isinstance(cli, subprocess.CompletedProcess) and cli.returncode == 0, cli.stderr
    for v in versions:
        assert v.hash[:12] in cli.stdout and v.inputs_digest[:12] in cli.stdout, cli.stdout
