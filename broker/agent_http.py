"""The agent endpoint over plain HTTP+JSON, for bootstraps on instances without gRPC.

POST /v1/agent/report with `{"attempt_id", "token", "kind", "exit_code", "log_tail"}` and
`authorization: Bearer <attempt token>`. It calls the same service function as AgentService.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from broker.service import AgentAuthError, BrokerServices

REPORT_PATH = "/v1/agent/report"
MAX_BODY = 64 * 1024
log = logging.getLogger(__name__)


class AgentHttpServer:
    def __init__(self, services: BrokerServices, loop: asyncio.AbstractEventLoop, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        bridge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                log.debug("agent http: " + format, *args)

            def do_POST(self) -> None:
                bridge._handle(self)

        self.services = services
        self.loop = loop
        self.host = host or "127.0.0.1"
        self.server = ThreadingHTTPServer((self.host, int(port or 0)), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="agent-http", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.server.server_address[1]}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handle(self, http: BaseHTTPRequestHandler) -> None:
        if http.path != REPORT_PATH:
            return _reply(http, 404, {"error": "not found"})
        length = int(http.headers.get("content-length") or 0)
        if length <= 0 or length > MAX_BODY:
            return _reply(http, 400, {"error": "body must be 1 byte to 64 KiB of JSON"})
        try:
            body = json.loads(http.rfile.read(length))
            attempt_id, kind = str(body["attempt_id"]), str(body["kind"])
            exit_code = body.get("exit_code")
            if exit_code is not None and not isinstance(exit_code, int):
                raise ValueError("exit_code must be an integer")
            log_tail = str(body.get("log_tail") or "")
        except (ValueError, KeyError, TypeError) as exc:
            return _reply(http, 400, {"error": f"bad report: {exc}"})
        token = http.headers.get("authorization", "").removeprefix("Bearer ").strip()

        async def report() -> bool:
            return self.services.agent_report(attempt_id, token, kind, exit_code, log_tail)

        try:
            stop = asyncio.run_coroutine_threadsafe(report(), self.loop).result(timeout=30)
        except AgentAuthError as exc:
            return _reply(http, 401, {"error": str(exc)})
        except Exception as exc:
            log.exception("agent report failed")
            return _reply(http, 500, {"error": type(exc).__name__})
        _reply(http, 200, {"stop": stop})


def _reply(http: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    http.send_response(status)
    http.send_header("content-type", "application/json")
    http.send_header("content-length", str(len(data)))
    http.end_headers()
    http.wfile.write(data)
