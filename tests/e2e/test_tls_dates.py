"""A server certificate's dates on a running `szb serve`: an expired or not yet valid one is refused
at start and at reload, naming the file and the date; one that expires soon is served with a warning.

Certificates are made at run time (`broker.tlsgen`), dated in the past or the future.
"""

from __future__ import annotations

import json
import re
import ssl
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from broker.auth import Role, token_entry_line
from broker.config import TlsSettings
from broker.tls import ServerTls, TlsFileError
from broker.tlsgen import Issued, issue, make_ca, write_pki
from tests.brokerproc import BrokerProcess
from tests.e2e.conftest import write_broker_config
from tests.e2e.test_tls import call, secure, szb

HOSTS = ["localhost", "127.0.0.1"]
OPERATOR = "token-operator-tls-dates-0123456789"


def server_pair(folder: Path, ca: Issued, *, days: int, valid_from: datetime | None = None) -> TlsSettings:
    """Write ca.pem, server.pem and server-key.pem (issued by `ca`) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    pair = issue(ca, "localhost", hosts=HOSTS, days=days, valid_from=valid_from)
    (folder / "ca.pem").write_bytes(ca.cert_pem)
    (folder / "server.pem").write_bytes(pair.cert_pem)
    (folder / "server-key.pem").write_bytes(pair.key_pem)
    return TlsSettings(cert_file=folder / "server.pem", key_file=folder / "server-key.pem")


def test_an_expired_or_not_yet_valid_certificate_is_refused_naming_the_file_and_date(tmp_path: Path) -> None:
    ca, now = make_ca(), datetime.now(UTC)
    expired = server_pair(tmp_path / "old", ca, days=30, valid_from=now - timedelta(days=31))
    with pytest.raises(TlsFileError) as err:
        ServerTls(expired)
    said = str(err.value)
    assert said.startswith("tls.cert_file:") and str(expired.cert_file) in said and "expired on" in said
    assert f"{(now - timedelta(days=1)):%Y-%m-%d}" in said
    # With an agent CA the refusal blamed the CA file ("does not verify the broker's certificate").
    with_ca = expired.model_copy(update={"agent_ca_file": tmp_path / "old" / "ca.pem"})
    with pytest.raises(TlsFileError, match=r"^tls\.cert_file: .* expired on"):
        ServerTls(with_ca)
    future = server_pair(tmp_path / "new", ca, days=30, valid_from=now + timedelta(days=2))
    with pytest.raises(TlsFileError, match=r"^tls\.cert_file: .* is not valid before"):
        ServerTls(future)


def test_serve_refuses_an_expired_certificate_and_warns_of_one_expiring_soon(tmp_path: Path) -> None:
    ca, now = make_ca(), datetime.now(UTC)
    expired = server_pair(tmp_path / "old", ca, days=30, valid_from=now - timedelta(days=31))
    config = write_broker_config(tmp_path / "b")
    with config.open("a") as f:
        f.write(f"tls: {{cert_file: {expired.cert_file}, key_file: {expired.key_file}}}\n")
    out = szb("serve", "--config", str(config), "--listen", "127.0.0.1:0")
    assert out.returncode == 1 and f"tls.cert_file: {expired.cert_file} expired on" in out.stderr, out.stderr
    server_pair(tmp_path / "old", ca, days=5)  # the same files, now valid for 5 more days
    proc = BrokerProcess(config)
    proc.start()
    try:
        assert proc.said("expires on", timeout=10), "".join(proc.output)
        assert "renew it" in "".join(proc.output)
        with secure(proc.address, str(tmp_path / "old" / "ca.pem")) as channel:
            assert call(channel) is None
    finally:
        proc.stop()


def expiry_gauge(proc: BrokerProcess, ca_file: str) -> float:
    """szb_tls_certificate_expiry_timestamp_seconds off the broker's /metrics (served over TLS)."""
    said = "".join(proc.output)
    [url] = set(re.findall(r"metrics on (https://\S+/metrics)", said))
    asked = urllib.request.Request(url, headers={"Authorization": f"Bearer {OPERATOR}"})
    trust = ssl.create_default_context(cafile=ca_file)
    with urllib.request.urlopen(asked, timeout=10, context=trust) as resp:
        text = resp.read().decode()
    [gauge] = [s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "szb_tls_certificate_expiry_timestamp_seconds"]
    return float(gauge)


def test_an_operator_sees_a_certificate_expiring_soon_in_status_and_in_metrics(tmp_path: Path) -> None:
    """The warning was in the log only: `szb status` and /metrics said nothing of a certificate
    about to expire, so no dashboard or alert could catch it before every client failed."""
    ca = make_ca()
    soon = server_pair(tmp_path / "pki", ca, days=5)
    config = write_broker_config(tmp_path / "b")
    with config.open("a") as f:
        f.write(f"tls: {{cert_file: {soon.cert_file}, key_file: {soon.key_file}}}\n")
        f.write("metrics_listen: 127.0.0.1:0\n")
    with (config.parent / "tokens.yaml").open("a") as f:
        f.write(token_entry_line("ops", OPERATOR, Role.OPERATOR, "alice") + "\n")
    proc = BrokerProcess(config)
    proc.start()
    ca_file = str(tmp_path / "pki" / "ca.pem")
    server = ("--server", proc.address, "--tls-ca", ca_file)
    try:
        shown = szb("status", *server, SZB_TOKEN=OPERATOR)
        assert shown.returncode == 0, shown.stderr
        said = " ".join(shown.stdout.split())
        assert f"certificate: TLS certificate {soon.cert_file} expires on" in said, said
        assert "renew it" in said, said
        as_json = json.loads(szb("status", *server, "--output", "json", SZB_TOKEN=OPERATOR).stdout)
        assert "expires on" in as_json["certificate"]
        tenant = szb("status", *server, "--output", "json")  # (a file path: operators' business)
        assert tenant.returncode == 0 and "certificate" not in json.loads(tenant.stdout), tenant.stdout
        expires = x509.load_pem_x509_certificate(soon.cert_file.read_bytes()).not_valid_after_utc
        assert expiry_gauge(proc, ca_file) == expires.timestamp()
        server_pair(tmp_path / "pki", ca, days=90)  # renewed: picked up at the next handshake
        with secure(proc.address, ca_file) as channel:
            assert call(channel) is None
        renewed = szb("status", *server, "--output", "json", SZB_TOKEN=OPERATOR)
        assert renewed.returncode == 0 and "certificate" not in json.loads(renewed.stdout), renewed.stdout
        later = expiry_gauge(proc, ca_file)
        assert later - expires.timestamp() > 80 * 86400
    finally:
        proc.stop()


def test_a_renewal_to_an_expired_certificate_is_refused_and_the_current_one_kept(tmp_path: Path) -> None:
    folder = tmp_path / "pki"
    paths = write_pki(folder)
    config = write_broker_config(tmp_path / "b")
    with config.open("a") as f:
        f.write(f"tls: {{cert_file: {paths['server_cert']}, key_file: {paths['server_key']}}}\n")
    proc = BrokerProcess(config)
    proc.start()
    try:
        other = make_ca("stale CA")
        server_pair(tmp_path / "stale", other, days=30, valid_from=datetime.now(UTC) - timedelta(days=40))
        paths["server_key"].write_bytes((tmp_path / "stale" / "server-key.pem").read_bytes())
        paths["server_cert"].write_bytes((tmp_path / "stale" / "server.pem").read_bytes())
        with secure(proc.address, str(paths["ca"])) as channel:  # the current pair is still served
            assert call(channel) is None
        assert proc.said("cannot be used, keeping the current ones", timeout=10)
        assert f"tls.cert_file: {paths['server_cert']} expired on" in "".join(proc.output)
        with secure(proc.address, str(tmp_path / "stale" / "ca.pem")) as channel:
            assert call(channel) == grpc.StatusCode.UNAVAILABLE
    finally:
        proc.stop()


def test_cli_tls_file_mistakes_are_one_line_naming_the_flag(tmp_path: Path) -> None:
    # A key given as the CA, or a client pair that does not match, reached gRPC and printed its
    # "Handshaker factory creation failed" lines (hostile-input review).
    paths, other = write_pki(tmp_path / "pki"), write_pki(tmp_path / "other")
    server = ("list", "--server", "127.0.0.1:1")  # nothing listens: the files are checked first
    cases = [
        (("--tls-ca", str(paths["client_key"])), "--tls-ca:", "no PEM certificate"),
        (("--tls-ca", str(paths["ca"]), "--tls-cert", str(paths["client_key"]),
          "--tls-key", str(paths["client_key"])), "--tls-cert:", "no PEM certificate"),
        (("--tls-ca", str(paths["ca"]), "--tls-cert", str(paths["client_cert"]),
          "--tls-key", str(other["client_key"])), "--tls-key:", "does not match"),
        (("--tls-ca", str(paths["ca"]), "--tls-cert", str(paths["client_cert"]),
          "--tls-key", str(paths["client_cert"])), "--tls-key:", "no PEM private key"),
    ]
    for flags, flag, words in cases:
        out = szb(*server, *flags)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 1 and len(lines) == 1, out.stderr
        assert lines[0].startswith(f"szb: error: {flag}") and words in lines[0], out.stderr
