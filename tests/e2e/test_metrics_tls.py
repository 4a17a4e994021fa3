"""/metrics over TLS: a peer that connects and never starts the handshake blocks no scrape.

The listening socket itself was wrapped in TLS, so the handshake ran inside `accept()` on the
one serving thread: one idle TCP connection (no token needed) froze every scrape for as long
as it was held (found by a held-out review of issue 12).
"""

from __future__ import annotations

import re
import socket
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from broker.auth import Role, token_entry_line
from broker.config import TlsSettings
from broker.metrics import BrokerMetrics
from broker.metrics_http import MetricsServer
from broker.tls import ServerTls
from broker.tlsgen import make_ca, write_pki
from tests.brokerproc import BrokerProcess
from tests.e2e.conftest import write_broker_config
from tests.e2e.test_tls_dates import server_pair
from tests.ports import ipv6_loopback_missing

OPERATOR = "token-operator-metrics-tls-0123456789"


def scrape(url: str, ca_file: str, timeout: float = 5.0) -> int:
    """The status of one TLS scrape of `url` with the operator's token."""
    asked = urllib.request.Request(url, headers={"Authorization": f"Bearer {OPERATOR}"})
    trust = ssl.create_default_context(cafile=ca_file)
    with urllib.request.urlopen(asked, timeout=timeout, context=trust) as resp:
        resp.read()
        return int(resp.status)


def idle(port: int) -> socket.socket:
    """A TCP connection to the port that never sends a ClientHello."""
    return socket.create_connection(("127.0.0.1", port), timeout=30)


def served_certificate(port: int, ca_file: str) -> bytes | None:
    """The DER certificate a TLS handshake with the port is served."""
    trust = ssl.create_default_context(cafile=ca_file)
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with trust.wrap_socket(raw, server_hostname="localhost") as conn:
        return conn.getpeercert(binary_form=True)


def leaf_der(settings: TlsSettings) -> bytes:
    return x509.load_pem_x509_certificate(settings.cert_file.read_bytes()).public_bytes(Encoding.DER)


def test_an_idle_connection_to_the_tls_metrics_port_does_not_freeze_scrapes(tmp_path: Path) -> None:
    paths = write_pki(tmp_path / "pki")
    config = write_broker_config(tmp_path / "b")
    with config.open("a") as f:
        f.write(f"tls: {{cert_file: {paths['server_cert']}, key_file: {paths['server_key']}}}\n")
        f.write("metrics_listen: 127.0.0.1:0\n")
    with (config.parent / "tokens.yaml").open("a") as f:
        f.write(token_entry_line("ops", OPERATOR, Role.OPERATOR, "prometheus") + "\n")
    proc = BrokerProcess(config)
    proc.start()
    try:
        [url] = set(re.findall(r"metrics on (https://\S+/metrics)", "".join(proc.output)))
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        held = [idle(port) for _ in range(3)]
        time.sleep(0.5)  # (accepted by the server by now)
        started = time.monotonic()
        assert scrape(url, str(paths["ca"])) == 200  # timed out (5 s) before the fix
        assert time.monotonic() - started < 3
        for sock in held:
            sock.close()
    finally:
        proc.stop()


def test_a_connection_that_never_handshakes_is_closed_and_a_renewed_certificate_is_served(
    tmp_path: Path,
) -> None:
    ca = make_ca()
    tls = ServerTls(server_pair(tmp_path / "pki", ca, days=30))
    server = MetricsServer(BrokerMetrics().registry, "127.0.0.1:0", tls=tls, timeout_s=1.0)
    ca_file = str(tmp_path / "pki" / "ca.pem")
    try:
        sock = idle(server.port)
        started = time.monotonic()
        assert scrape(server.url, ca_file) == 200
        assert sock.recv(1) == b""  # closed by the broker at its handshake timeout
        assert 0.5 < time.monotonic() - started < 5
        sock.close()
        renewed = server_pair(tmp_path / "pki", ca, days=90)  # picked up at the next handshake
        assert served_certificate(server.port, ca_file) == leaf_der(renewed)
    finally:
        server.stop()


def test_connections_past_the_cap_are_closed_at_once_and_scrapes_go_on(tmp_path: Path) -> None:
    # Review: a thread per connection and no cap, so many idle peers (no token needed) each held
    # a thread for up to 10 s.
    server = MetricsServer(BrokerMetrics().registry, "127.0.0.1:0", timeout_s=60.0, max_connections=4)
    try:
        held = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(4)]
        extra = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        # (the server accepts in order: the four before it hold every slot by now)
        try:
            assert extra.recv(1) == b""  # closed at once; before the cap it waited 60 s for a request
        except ConnectionResetError:
            pass
        extra.close()
        held.pop().close()  # a slot comes free when its connection ends: scrapes are served again
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(server.url, timeout=5) as resp:
                    assert resp.status == 200 and b"szb_" in resp.read()
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "no scrape was served after a slot came free"
                time.sleep(0.1)
        for sock in held:
            sock.close()
    finally:
        server.stop()


def test_metrics_listen_on_an_ipv6_address_is_served_at_a_bracketed_url() -> None:
    # The same review's IPv6 case: `metrics_listen: "[::1]:0"` would not start ("Name or service
    # not known"), and `::1:0` printed http://::1:PORT/metrics, which no client can use.
    if (missing := ipv6_loopback_missing()) is not None:
        pytest.skip(missing)
    server = MetricsServer(BrokerMetrics().registry, "[::1]:0")
    try:
        assert server.url == f"http://[::1]:{server.port}/metrics"
        with urllib.request.urlopen(server.url, timeout=10) as resp:
            assert resp.status == 200 and b"szb_" in resp.read()
    finally:
        server.stop()
