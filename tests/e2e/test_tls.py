"""TLS and mutual TLS on a running `szb serve`: gRPC port, agent endpoint, CLI flags, warnings.

Certificates are made at run time (`broker.tlsgen`, on the `cryptography` package): a right
CA that signed the broker's certificate, and a wrong CA with its own server and client pairs.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc
from broker.config import BrokerConfig, ConfigFileError, load_config
from broker.tls import is_loopback
from broker.tlsgen import issue, make_ca, write_pki
from tests.brokerproc import ROOT, BrokerProcess
from tests.e2e.conftest import TOKENS, write_broker_config

REQUEST = pb.ListJobsRequest()
AUTH = (("authorization", f"Bearer {TOKENS['team-a']}"),)


@dataclass(frozen=True)
class Pki:
    folder: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """right/{ca,server,server-key,client,client-key}.pem and wrong/ the same from another CA."""
    root = tmp_path_factory.mktemp("pki")
    write_pki(root / "right")
    write_pki(root / "wrong")
    return Pki(root)


def right(pki: Pki, name: str) -> str:
    return str(pki.folder / "right" / f"{name}.pem")


def wrong(pki: Pki, name: str) -> str:
    return str(pki.folder / "wrong" / f"{name}.pem")


def start(folder: Path, pki: Pki, *, mutual: bool = False, extra: str = "") -> BrokerProcess:
    config = write_broker_config(folder)
    tls = (
        f"tls:\n  cert_file: {right(pki, 'server')}\n  key_file: {right(pki, 'server-key')}\n"
        f"  agent_ca_file: {right(pki, 'ca')}\n"
    )
    if mutual:
        tls += f"  client_ca_file: {right(pki, 'ca')}\n  require_client_cert: true\n"
    with config.open("a") as f:
        f.write(tls + "agent_http_listen: 127.0.0.1:0\n" + extra)
    proc = BrokerProcess(config)
    proc.start()
    return proc


def agent_port(proc: BrokerProcess) -> int:
    m = re.search(r"agent endpoint on https?://[^:]+:(\d+)", "".join(proc.output))
    assert m, "".join(proc.output)
    return int(m.group(1))


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[BrokerProcess]:
    proc = start(tmp_path_factory.mktemp("tls"), pki)
    yield proc
    proc.stop()


def call(channel: grpc.Channel) -> grpc.StatusCode | None:
    stub = broker_service_pb2_grpc.BrokerServiceStub(channel)
    try:
        stub.ListJobs(REQUEST, metadata=AUTH, timeout=5)
    except grpc.RpcError as err:
        return err.code()  # type: ignore[no-any-return]
    return None


def secure(address: str, ca: str, cert: str | None = None, key: str | None = None) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(
        Path(ca).read_bytes(),
        Path(key).read_bytes() if key else None,
        Path(cert).read_bytes() if cert else None,
    )
    return grpc.secure_channel(address, creds)


def szb(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SZB_TLS_")}
    return subprocess.run(
        [sys.executable, "-m", "broker.cli", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=60, env={**clean, "GRPC_VERBOSITY": "ERROR", "SZB_TOKEN": TOKENS["team-a"], **env},
    )


def http_post(port: int, context: ssl.SSLContext | None) -> bytes:
    """One report with a made-up attempt; returns what came back (b'' when the server hung up)."""
    body = json.dumps({"attempt_id": "att-nope", "kind": "heartbeat"}).encode()
    request = (
        f"POST /v1/agent/report HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer nope\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        sock: socket.socket = context.wrap_socket(raw, server_hostname="localhost") if context else raw
        sock.sendall(request)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, ssl.SSLError):
            pass
        return b"".join(chunks)


# --- gRPC ------------------------------------------------------------------------------------


def test_grpc_refuses_plaintext_and_wrong_ca_and_serves_the_right_ca(
    tls_broker: BrokerProcess, pki: Pki
) -> None:
    with grpc.insecure_channel(tls_broker.address) as plain:
        assert call(plain) == grpc.StatusCode.UNAVAILABLE
    with secure(tls_broker.address, wrong(pki, "ca")) as bad:
        assert call(bad) == grpc.StatusCode.UNAVAILABLE
    with secure(tls_broker.address, right(pki, "ca")) as good:
        assert call(good) is None


def test_cli_tls_flags_and_environment(tls_broker: BrokerProcess, pki: Pki) -> None:
    ok = szb("list", "--server", tls_broker.address, "--tls-ca", right(pki, "ca"))
    assert ok.returncode == 0, ok.stderr
    by_env = szb("list", "--server", tls_broker.address, SZB_TLS_CA=right(pki, "ca"))
    assert by_env.returncode == 0, by_env.stderr
    plain = szb("list", "--server", tls_broker.address, "--token", TOKENS["team-a"])
    assert plain.returncode == 1 and "UNAVAILABLE" in plain.stderr
    assert "serving TLS closes a plaintext connection: --tls-ca FILE, or SZB_TLS_CA" in plain.stderr
    wrong_ca = szb("list", "--server", tls_broker.address, "--tls-ca", wrong(pki, "ca"))
    assert wrong_ca.returncode == 1 and "UNAVAILABLE" in wrong_ca.stderr
    missing = szb("list", "--server", tls_broker.address, "--tls-ca", "/nonexistent/ca.pem")
    assert missing.returncode == 1 and "--tls-ca: cannot read /nonexistent/ca.pem" in missing.stderr
    remote = szb("list", "--server", "broker.invalid:1", "--token", "t")  # never resolves
    assert "szb: warning: no TLS to broker.invalid:1" in remote.stderr


def test_mutual_tls_refuses_callers_without_a_certificate_from_the_client_ca(
    tmp_path: Path, pki: Pki
) -> None:
    proc = start(tmp_path, pki, mutual=True)
    try:
        with secure(proc.address, right(pki, "ca")) as anonymous:
            assert call(anonymous) == grpc.StatusCode.UNAVAILABLE
        foreign_pair = (wrong(pki, "client"), wrong(pki, "client-key"))
        with secure(proc.address, right(pki, "ca"), *foreign_pair) as foreign:
            assert call(foreign) == grpc.StatusCode.UNAVAILABLE
        with secure(proc.address, right(pki, "ca"), right(pki, "client"), right(pki, "client-key")) as good:
            assert call(good) is None
        cli = szb(
            "list", "--server", proc.address, "--tls-ca", right(pki, "ca"),
            "--tls-cert", right(pki, "client"), "--tls-key", right(pki, "client-key"),
        )
        assert cli.returncode == 0, cli.stderr
        env = szb(
            "list", "--server", proc.address, SZB_TLS_CA=right(pki, "ca"),
            SZB_TLS_CERT=right(pki, "client"), SZB_TLS_KEY=right(pki, "client-key"),
        )
        assert env.returncode == 0, env.stderr
        # Instances have no client certificate: the agent endpoint stays server-TLS only.
        ctx = ssl.create_default_context(cafile=right(pki, "ca"))
        assert http_post(agent_port(proc), ctx).startswith(b"HTTP/1.0 401")
    finally:
        proc.stop()


# --- the agent endpoint ----------------------------------------------------------------------


def test_agent_endpoint_refuses_plaintext_and_wrong_ca(tls_broker: BrokerProcess, pki: Pki) -> None:
    port = agent_port(tls_broker)
    assert not http_post(port, None).startswith(b"HTTP/")
    with pytest.raises(ssl.SSLCertVerificationError):
        http_post(port, ssl.create_default_context(cafile=wrong(pki, "ca")))
    answer = http_post(port, ssl.create_default_context(cafile=right(pki, "ca")))
    assert answer.startswith(b"HTTP/1.0 401") and answer.endswith(b'{"error": "unauthenticated"}')


def test_renewed_certificate_is_served_without_restart(tmp_path: Path, pki: Pki) -> None:
    folder = tmp_path / "pki"
    write_pki(folder)
    config = write_broker_config(tmp_path / "b")
    with config.open("a") as f:
        f.write(f"tls: {{cert_file: {folder / 'server.pem'}, key_file: {folder / 'server-key.pem'}}}\n")
    proc = BrokerProcess(config)
    proc.start()
    try:
        with secure(proc.address, str(folder / "ca.pem")) as first:
            assert call(first) is None
        ca2 = make_ca("renewal CA")
        pair = issue(ca2, "localhost", hosts=["localhost", "127.0.0.1"])
        (folder / "server-key.pem").write_bytes(pair.key_pem)
        (folder / "server.pem").write_bytes(pair.cert_pem)
        (tmp_path / "ca2.pem").write_bytes(ca2.cert_pem)
        with secure(proc.address, str(tmp_path / "ca2.pem")) as renewed:
            assert call(renewed) is None
        with secure(proc.address, str(folder / "ca.pem")) as old:
            assert call(old) == grpc.StatusCode.UNAVAILABLE
        port = agent_port(proc)
        assert http_post(port, ssl.create_default_context(cafile=str(tmp_path / "ca2.pem"))).startswith(
            b"HTTP/1.0 401"
        )
    finally:
        proc.stop()


# --- configuration and warnings --------------------------------------------------------------


def test_bad_tls_files_stop_the_broker_with_the_field_named(tmp_path: Path, pki: Pki) -> None:
    config = write_broker_config(tmp_path)
    with config.open("a") as f:
        f.write(f"tls: {{cert_file: {right(pki, 'server')}, key_file: {wrong(pki, 'server-key')}}}\n")
    out = szb("serve", "--config", str(config), "--listen", "127.0.0.1:0")
    assert out.returncode == 1 and "tls.key_file:" in out.stderr and "does not fit" in out.stderr
    (tmp_path / "broker.yaml").write_text(config.read_text().replace(wrong(pki, "server-key"), "nope.pem"))
    out = szb("serve", "--config", str(config), "--listen", "127.0.0.1:0")
    assert out.returncode == 1 and f"tls.key_file: cannot read {tmp_path / 'nope.pem'}" in out.stderr
    assert f"`szb tls init {tmp_path}` makes a test set" in out.stderr
    config.write_text("tls: {cert_file: a.pem, key_file: b.pem, require_client_cert: true}\n")
    with pytest.raises(ConfigFileError, match="require_client_cert needs client_ca_file"):
        load_config(config)


def test_plaintext_beyond_loopback_warns_and_loopback_does_not(tmp_path: Path) -> None:
    assert BrokerConfig().tls is None and is_loopback(BrokerConfig().listen.rpartition(":")[0])
    assert is_loopback("::1") and is_loopback("localhost") and not is_loopback("0.0.0.0")
    quiet = BrokerProcess(write_broker_config(tmp_path / "quiet"))
    quiet.start()
    quiet.stop()
    assert "WITHOUT TLS" not in "".join(quiet.output)
    config = write_broker_config(tmp_path / "loud")
    with config.open("a") as f:
        f.write("agent_http_listen: 0.0.0.0:0\nmetrics_listen: 0.0.0.0:0\n")
    loud = BrokerProcess(config, host="0.0.0.0")
    loud.start()
    loud.stop()
    log = "".join(loud.output)
    assert "the gRPC port listens on 0.0.0.0 WITHOUT TLS" in log
    assert "the agent endpoint listens on 0.0.0.0 WITHOUT TLS" in log
    # Prometheus sends an operator's token there (a review: no warning); and the warning's own
    # words were masked as a secret ("bearer [REDACTED] and agent secrets").
    assert "the metrics endpoint listens on 0.0.0.0 WITHOUT TLS" in log
    assert "[REDACTED]" not in log


def test_shipped_broker_yaml_uses_tls_and_an_https_agent_endpoint() -> None:
    cfg = load_config(ROOT / "configs" / "broker.yaml")
    assert cfg.tls is not None and cfg.tls.cert_file.name and cfg.tls.agent_ca_file is not None
    assert cfg.agent_endpoint.startswith("https://")


def test_plain_http_agent_endpoint_with_tls_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "broker.yaml"
    config.write_text("tls: {cert_file: a.pem, key_file: b.pem}\nagent_endpoint: http://broker.example:8081\n")
    with pytest.raises(ConfigFileError, match="agent_endpoint: must be https://"):
        load_config(config)


def test_a_verified_client_certificate_can_stand_for_a_token(tmp_path: Path) -> None:
    ca = make_ca()
    files = {"ca": ca.cert_pem}
    for name, pair in (
        ("server", issue(ca, "localhost", hosts=["localhost", "127.0.0.1"])),
        ("batch", issue(ca, "svc-batch", client=True)),
        ("stranger", issue(ca, "svc-stranger", client=True)),
    ):
        files[name], files[f"{name}-key"] = pair.cert_pem, pair.key_pem
    for name, data in files.items():
        (tmp_path / f"{name}.pem").write_bytes(data)
    config = write_broker_config(tmp_path / "b")
    with (config.parent / "tokens.yaml").open("a") as f:
        f.write("  - {tenant: team-b, client_cn: svc-batch}\n")
    with config.open("a") as f:
        f.write(
            f"tls: {{cert_file: {tmp_path / 'server.pem'}, key_file: {tmp_path / 'server-key.pem'}, "
            f"client_ca_file: {tmp_path / 'ca.pem'}, require_client_cert: true}}\n"
        )
    proc = BrokerProcess(config)
    proc.start()
    ca_file = str(tmp_path / "ca.pem")
    try:
        pair = (str(tmp_path / "batch.pem"), str(tmp_path / "batch-key.pem"))
        with secure(proc.address, ca_file, *pair) as ch:
            stub = broker_service_pb2_grpc.BrokerServiceStub(ch)
            job = pb.SubmitJobRequest()
            job.job.name, job.job.command[:] = "by-cert", ["true"]
            job.job.runtime_estimate.seconds = 60
            assert stub.SubmitJob(job, timeout=10).job.tenant == "team-b"  # no bearer token at all
            assert call(ch) is None  # a token, when sent, decides (team-a here)
        pair = (str(tmp_path / "stranger.pem"), str(tmp_path / "stranger-key.pem"))
        with secure(proc.address, ca_file, *pair) as ch:
            stub = broker_service_pb2_grpc.BrokerServiceStub(ch)
            with pytest.raises(grpc.RpcError) as err:
                stub.ListJobs(REQUEST, timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        proc.stop()


def test_an_agent_ca_that_does_not_verify_the_broker_is_refused_at_start(tmp_path: Path) -> None:
    """`tls.agent_ca_file` is handed to cloud instances to verify the agent endpoint: a file
    that is no CA, or another CA than the one that signed `cert_file`, started fine and every
    cloud bootstrap then failed its verification (hostile-input review)."""
    from broker.config import TlsSettings
    from broker.tls import ServerTls, TlsFileError

    ours, other = write_pki(tmp_path / "ours"), write_pki(tmp_path / "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    base = {"cert_file": ours["server_cert"], "key_file": ours["server_key"]}
    ServerTls(TlsSettings(**base, agent_ca_file=ours["ca"]))  # the CA that signed it: fine
    for bad, said in ((other["ca"], "does not verify the broker's certificate"),
                      (garbage, "tls.agent_ca_file"), (tmp_path / "nope.pem", "no such file")):
        with pytest.raises(TlsFileError, match=r"tls\.agent_ca_file") as err:
            ServerTls(TlsSettings(**base, agent_ca_file=bad))
        assert said in str(err.value), err.value


def test_a_client_ca_file_that_holds_no_certificate_is_named_at_start(tmp_path: Path) -> None:
    """Held-out review: `client_ca_file` set to the server's key (a PEM file, but no certificate)
    stopped the broker saying the address was in use; it names the field and the file now."""
    from broker.config import TlsSettings
    from broker.tls import ServerTls, TlsFileError

    ours = write_pki(tmp_path / "ours")
    base = {"cert_file": ours["server_cert"], "key_file": ours["server_key"], "require_client_cert": True}
    ServerTls(TlsSettings(**base, client_ca_file=ours["ca"]))  # a CA certificate: fine
    with pytest.raises(TlsFileError, match=r"tls\.client_ca_file: .* holds no PEM certificate"):
        ServerTls(TlsSettings(**base, client_ca_file=ours["server_key"]))
