"""The UserData bootstrap verifies the broker's certificate with the CA bundle it carries."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from adapters.bootstrap import render_user_data
from broker.model import Offer, SiteId
from broker.tlsgen import issue, make_ca
from tests.clouds.conftest import launch
from tests.processes import Held

OFFER = Offer(site=SiteId("s"), instance_type="t", accelerator=None, count=0, price_per_hour=1)
CA = make_ca("broker CA")
OTHER_CA = make_ca("someone else's CA")


class Endpoint:
    """An HTTPS agent endpoint double that records what reaches it."""

    def __init__(self, folder: Path) -> None:
        pair = issue(CA, "localhost", hosts=["localhost", "127.0.0.1"])
        (folder / "cert.pem").write_bytes(pair.cert_pem)
        (folder / "key.pem").write_bytes(pair.key_pem)
        self.reports: list[dict[str, object]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                endpoint.reports.append(json.loads(body))
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(folder / "cert.pem", folder / "key.pem")
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[Endpoint]:
    ep = Endpoint(tmp_path)
    yield ep
    ep.server.shutdown()
    ep.server.server_close()


def run(script: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SZB_WORKDIR": str(workdir), "SZB_NO_POWEROFF": "1"}
    return subprocess.run(
        ["sh", "-c", script], env=env, timeout=60, check=False, capture_output=True, text=True
    )


def script(endpoint: str, ca_pem: bytes) -> str:
    req = launch(OFFER, "t")
    spec = req.spec.model_copy(update={"command": ("true",)})
    return render_user_data(
        req.model_copy(update={"agent_endpoint": endpoint, "agent_ca_pem": ca_pem.decode(), "spec": spec}),
        heartbeat_s=1,  # the heartbeat loop's last sleep holds the output pipe open this long
    )


def test_reports_reach_a_broker_whose_certificate_chains_to_the_shipped_ca(
    endpoint: Endpoint, tmp_path: Path
) -> None:
    out = run(script(f"https://localhost:{endpoint.port}", CA.cert_pem), tmp_path / "w")
    assert out.returncode == 0, out.stderr
    kinds = [r["kind"] for r in endpoint.reports]
    assert kinds[0] == "started" and "exit" in kinds and set(kinds) <= {"started", "heartbeat", "exit"}
    assert (tmp_path / "w" / "agent-ca.pem").read_bytes().strip() == CA.cert_pem.strip()


def test_endpoint_without_scheme_defaults_to_https_when_a_ca_is_shipped(
    endpoint: Endpoint, tmp_path: Path
) -> None:
    out = run(script(f"127.0.0.1:{endpoint.port}", CA.cert_pem), tmp_path)
    assert out.returncode == 0, out.stderr
    kinds = [r["kind"] for r in endpoint.reports]
    assert kinds[0] == "started" and "exit" in kinds and set(kinds) <= {"started", "heartbeat", "exit"}


def refused_until_killed(text: str, workdir: Path) -> str:
    """Run a bootstrap whose reports cannot get through (it keeps retrying its exit report);
    return its stderr once a refusal shows, then stop it."""
    env = {**os.environ, "SZB_WORKDIR": str(workdir), "SZB_NO_POWEROFF": "1"}
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(["sh", "-c", text], env=env, stderr=err, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            shell = Held(proc.pid)  # not poll(): a reaped shell's pid may be another's by the killpg
            while "CERTIFICATE_VERIFY_FAILED" not in Path(f"/proc/self/fd/{err.fileno()}").read_text():
                assert time.monotonic() < deadline and shell.alive()
                time.sleep(0.1)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        err.seek(0)
        return err.read()


def test_reports_are_not_sent_to_a_certificate_from_another_ca(endpoint: Endpoint, tmp_path: Path) -> None:
    stderr = refused_until_killed(script(f"https://localhost:{endpoint.port}", OTHER_CA.cert_pem), tmp_path)
    assert endpoint.reports == [] and "CERTIFICATE_VERIFY_FAILED" in stderr


def test_no_ca_bundle_means_the_system_roots_still_verify(endpoint: Endpoint, tmp_path: Path) -> None:
    stderr = refused_until_killed(script(f"https://localhost:{endpoint.port}", b""), tmp_path)
    assert endpoint.reports == [] and "CERTIFICATE_VERIFY_FAILED" in stderr
