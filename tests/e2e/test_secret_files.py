"""The broker's own secrets stay out of reach of sandboxed jobs: a real `szb serve` as root.

Each broker lives in a folder anyone may enter (as a clone under /home or /srv is), so only
the files' own modes keep a job (the job user) out. A job is the honest probe: it tries to
read the file and reports what happened.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.auth import Role, token_entry_line
from broker.tlsgen import write_pki
from tests.brokerproc import BrokerProcess, szb
from tests.e2e.conftest import PY, auth, write_broker_config
from tests.e2e.test_jobs_api import TERMINAL, spec, submit, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching to the job user needs root")

OPERATOR = "token-ops-" + uuid.uuid4().hex


@pytest.fixture
def folder() -> Iterator[Path]:
    """broker.yaml, policy and tokens in a folder the job user may enter."""
    top = Path(tempfile.mkdtemp(prefix="szb-secrets-"))
    top.chmod(0o755)
    write_broker_config(top / "b")
    (top / "b").chmod(0o755)
    with (top / "b" / "tokens.yaml").open("a") as tokens:
        tokens.write(token_entry_line("ops", OPERATOR, Role.OPERATOR) + "\n")
    yield top / "b"
    shutil.rmtree(top, ignore_errors=True)


def refused(config: Path) -> str:
    """The broker's output when it refuses to start (fails the test when it starts)."""
    proc = BrokerProcess(config)
    try:
        proc.start()
    except RuntimeError as exc:
        return str(exc)
    proc.stop()
    raise AssertionError("the broker started")


def tries_to_read(stub: broker_service_pb2_grpc.BrokerServiceStub, path: Path) -> str:
    """'read' or 'denied': what a job of team-a got when it opened `path`."""
    code = (
        "import json\n"
        "try:\n"
        f"    open({str(path)!r}, 'rb').read(16); seen = 'read'\n"
        "except PermissionError:\n"
        "    seen = 'denied'\n"
        "print(json.dumps(seen))"
    )
    job = submit(stub, spec(f"probe-{uuid.uuid4().hex[:8]}", [PY, "-c", code])).job
    final = wait_for(stub, job.id, TERMINAL)
    assert final.state == job_pb2.JOB_STATE_SUCCEEDED, final.log_tail
    seen: str = json.loads(final.log_tail.strip().splitlines()[-1])
    return seen


def test_a_tls_key_the_job_user_could_read_stops_the_broker(folder: Path) -> None:
    paths = write_pki(folder / "tls")
    key = paths["server_key"]
    config = folder / "broker.yaml"
    config.write_text(
        config.read_text() + "tls: {cert_file: tls/server.pem, key_file: tls/server-key.pem}\n"
    )
    key.chmod(0o644)  # copied without -p, or written under a umask of 022
    out = refused(config)
    assert f"tls.key_file {key}" in out and f"chmod 600 {key}" in out, out
    key.chmod(0o600)  # the fix the message names; `szb tls init` writes it so
    proc = BrokerProcess(config)
    proc.start()
    try:
        creds = grpc.ssl_channel_credentials(root_certificates=paths["ca"].read_bytes())
        with grpc.secure_channel(f"localhost:{proc.port}", creds) as channel:
            assert tries_to_read(broker_service_pb2_grpc.BrokerServiceStub(channel), key) == "denied"
    finally:
        proc.stop()


def test_a_broker_yaml_holding_a_credential_must_be_private(folder: Path) -> None:
    config = folder / "broker.yaml"
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdW4iOiJicm9rZXIifQ.c2lnbmF0dXJlLXNlY3JldA"
    config.write_text(config.read_text() + f"  hpc: {{user: broker, token: {jwt}}}\n")
    out = refused(config)
    assert f"broker.yaml {config}" in out and f"chmod 600 {config}" in out, out
    assert jwt not in out
    config.chmod(0o600)
    proc = BrokerProcess(config)
    proc.start()
    try:
        with grpc.insecure_channel(proc.address) as channel:
            assert tries_to_read(broker_service_pb2_grpc.BrokerServiceStub(channel), config) == "denied"
    finally:
        proc.stop()


def test_a_tokens_file_the_job_user_can_read_is_reported_loudly(folder: Path) -> None:
    # Only hashes sit there and `szb token >> tokens.yaml` makes it 0644, so the broker serves,
    # but it says so at start and in an operator's status until the file is private.
    tokens = folder / "tokens.yaml"
    proc = BrokerProcess(folder / "broker.yaml")
    proc.start()
    try:
        with grpc.insecure_channel(proc.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
            assert tries_to_read(stub, tokens) == "read"
            log = "".join(proc.output)
            assert f"tokens_file {tokens} is readable by the job user" in log, log
            assert f"chmod 600 {tokens}" in log
            ops = (("authorization", f"Bearer {OPERATOR}"),)
            exposed = stub.GetStatus(pb.GetStatusRequest(), metadata=ops).exposed_secret_files
            assert [e for e in exposed if str(tokens) in e and "chmod 600" in e], exposed
            shown = szb(proc, OPERATOR, "status")
            assert shown.returncode == 0 and f"chmod 600 {tokens}" in shown.stdout, shown
            tenant = stub.GetStatus(pb.GetStatusRequest(), metadata=auth("team-a"))
            assert not tenant.exposed_secret_files  # paths are for operators
            tokens.chmod(0o600)
            assert tries_to_read(stub, tokens) == "denied"
            assert not stub.GetStatus(pb.GetStatusRequest(), metadata=ops).exposed_secret_files
    finally:
        proc.stop()
