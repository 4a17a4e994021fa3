"""The bootstrap's report takes a 4xx as final only from the broker's own agent endpoint.

Issue 11 review, defect 3: a proxy or ingress in front of the broker (a 404 default backend
while the broker restarts, a 403 of an auth proxy) made the exit report give up at once, its
result left on the console only. The endpoint marks its answers (`x-szb-agent`); any other 4xx
is retried like a 5xx.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from adapters.bootstrap import _REPORT_PY
from broker.agent_http import reply


class Front(BaseHTTPRequestHandler):
    """A proxy's 404 page until `server.up`; then the broker's own answers (its `reply`)."""

    server: Server

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.server.hits.append(self.path)
        if not self.server.up:
            page = b"default backend - 404"
            self.send_response(404)
            self.send_header("content-length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
        elif self.server.refuse:
            reply(self, 401, {"error": "unknown attempt or wrong secret"})
        elif self.path == "/v1/agent/log":
            reply(self, 200, {"next_offset": 5})  # all of "done\n"
        else:
            reply(self, 200, {"stop": True})

    def log_message(self, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    up = False
    refuse = False
    hits: list[str]


@pytest.fixture
def front() -> Iterator[Server]:
    server = Server(("127.0.0.1", 0), Front)
    server.hits = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _report(front: Server, work: Path) -> subprocess.Popen[str]:
    """The exit report as an instance's UserData runs it."""
    (work / "job.log").write_text("done\n")
    env = {
        **os.environ, "SZB_WORKDIR": str(work), "SZB_LOG": str(work / "job.log"),
        "SZB_LOG_TAIL_BYTES": "4096",
        "SZB_JOB_ID": "j-1", "SZB_ATTEMPT_ID": "j-1-a1", "SZB_TOKEN": "t", "SZB_AGENT_TOKEN": "s",
        "SZB_AGENT_ENDPOINT": f"127.0.0.1:{front.server_port}", "SZB_REPORT_PATH": "/v1/agent/report",
        "SZB_REPORT_GIVE_UP_S": "120", "SZB_REPORT_BACKOFF_MAX_S": "1", "SZB_CONSOLE_TAIL_BYTES": "2048",
    }
    return subprocess.Popen(["python3", "-c", _REPORT_PY, "exit", "0"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_a_404_not_from_the_broker_is_retried_until_the_broker_acks(front: Server, tmp_path: Path) -> None:
    proc = _report(front, tmp_path)
    try:
        deadline = time.monotonic() + 30
        while len(front.hits) < 3:  # the proxy's 404s, and the script still knocking
            assert proc.poll() is None, f"gave up at a proxy's 404: {proc.communicate()[1]}"
            assert time.monotonic() < deadline, "the report stopped knocking"
            time.sleep(0.05)
        front.up = True  # the broker is back behind the proxy
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert (tmp_path / "acked").exists() and "/v1/agent/report" in front.hits


def test_the_brokers_own_refusal_still_ends_the_report_at_once(front: Server, tmp_path: Path) -> None:
    front.up = front.refuse = True
    started = time.monotonic()
    proc = _report(front, tmp_path)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 3 and "result not delivered (refused)" in err, err
    assert time.monotonic() - started < 10 and not (tmp_path / "acked").exists()
