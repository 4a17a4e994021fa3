"""The agent endpoint over HTTP(S)+JSON, for bootstraps on instances without gRPC.

POST /v1/agent/report with `{"attempt_id", "kind", "exit_code", "log_tail"}` (plus `rank` from a
gang's node) and
`authorization: Bearer <attempt secret>`. It calls the same service function as AgentService.

The port faces the internet (cloud instances report to it), so the server is bounded: a
fixed pool of workers, a connection cap beyond which callers get 503 at once (and a smaller
one per client address, so one caller holding connections open cannot lock out every other
instance's heartbeats), a timeout on
every read and a whole-request deadline after which the connection is cut (a slow sender
cannot hold a worker), and TLS done in the worker, never in the accept loop.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from broker.errors import BrokerError
from broker.listen import listen_error
from broker.service import AgentAuthError, AgentReportError, BrokerServices
from broker.store import StoreUnavailable
from broker.tls import ServerTls

REPORT_PATH = "/v1/agent/report"
LOG_PATH = "/v1/agent/log"
"""Chunks of a job's output: `{"attempt_id", "offset", "data": base64}` -> `{"next_offset"}`."""
MAX_BODY = 64 * 1024
KINDS = frozenset({"started", "heartbeat", "alive", "exit"})
INT32 = (-(2**31), 2**31 - 1)
UNAUTHENTICATED = {"error": "unauthenticated"}
"""The one answer for an unknown attempt, a wrong secret or a missing header (no oracle)."""
log = logging.getLogger(__name__)


def client_key(address: str) -> str:
    """Whom the per-client cap counts a connection against: an IPv4 address; an IPv6 one's /64
    (one host holds a whole /64); every loopback address as one (any local process, a local job
    included, may bind any of 127.0.0.0/8 and would otherwise be a crowd of clients)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback"
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class BadReportError(BrokerError, ValueError):
    """The report is malformed; the message names the field."""


class _Handler(BaseHTTPRequestHandler):
    server: _BoundedServer
    protocol_version = "HTTP/1.0"  # one request per connection: nothing idles in a worker

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.read_timeout_s)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("agent http: " + format, *args)

    def do_POST(self) -> None:
        self.server.bridge.handle(self)

    def _not_allowed(self) -> None:
        reply(self, 405, {"error": "only POST " + REPORT_PATH})

    do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = _not_allowed


class _BoundedServer(HTTPServer):
    """HTTPServer with a worker pool, a connection cap and a per-connection deadline."""

    daemon_threads = True
    request_queue_size = 128  # accepted fast and answered 503 beyond the cap, not left in SYN limbo

    def __init__(
        self,
        address: tuple[str, int],
        bridge: AgentHttpServer,
        *,
        family: int = socket.AF_INET,
        tls: ServerTls | None,
        max_connections: int,
        max_per_client: int,
        read_timeout_s: float,
        deadline_s: float,
    ) -> None:
        self.bridge = bridge
        self.max_per_client = max_per_client
        self._by_client: dict[str, int] = {}
        self.tls = tls
        self.read_timeout_s = read_timeout_s
        self.deadline_s = deadline_s
        self._slots = threading.BoundedSemaphore(max_connections)
        self._pool = ThreadPoolExecutor(max_workers=max_connections, thread_name_prefix="agent-http")
        self._live: dict[socket.socket, float] = {}
        self._live_lock = threading.Lock()
        self._closing = threading.Event()
        self.address_family = family  # (read by the base class when it makes the socket)
        super().__init__(address, _Handler)
        self._reaper = threading.Thread(target=self._reap, name="agent-http-reaper", daemon=True)
        self._reaper.start()

    def process_request(self, request: Any, client_address: Any) -> None:
        client = client_key(str(client_address[0]))
        with self._live_lock:
            held = self._by_client.get(client, 0)
            admitted = held < self.max_per_client and self._slots.acquire(blocking=False)
            if admitted:
                self._by_client[client] = held + 1
                self._live[request] = time.monotonic() + self.deadline_s
        if not admitted:
            _busy(request, plaintext=self.tls is None)
            self.shutdown_request(request)
            return
        self._pool.submit(self._work, request, client_address)

    def _work(self, raw: socket.socket, client_address: Any) -> None:
        conn: socket.socket = raw
        try:
            raw.settimeout(self.read_timeout_s)
            if self.tls is not None:
                conn = self.tls.handshake(raw, self.read_timeout_s)
                with self._live_lock:  # wrapping moved the descriptor to `conn`
                    self._live[conn] = self._live.pop(raw, time.monotonic())
            self.finish_request(conn, client_address)
        except (OSError, ssl.SSLError) as exc:  # handshake refused, peer gone, deadline cut
            log.debug("agent http connection from %s ended: %s", client_address, exc)
        except Exception:
            log.exception("agent http connection from %s failed", client_address)
        finally:
            client = client_key(str(client_address[0]))
            with self._live_lock:
                self._live.pop(raw, None)
                self._live.pop(conn, None)
                left = self._by_client.get(client, 1) - 1
                if left > 0:
                    self._by_client[client] = left
                else:
                    self._by_client.pop(client, None)
            self.shutdown_request(conn)
            self._slots.release()

    def _reap(self) -> None:
        """Cut connections past their deadline: a blocked read then returns in its worker."""
        while not self._closing.wait(0.25):
            self._cut(time.monotonic())

    def _cut(self, now: float) -> None:
        with self._live_lock:
            late = [s for s, deadline in self._live.items() if deadline < now]
            for sock in late:
                self._live[sock] = float("inf")  # cut once
        for sock in late:
            try:  # the plain socket call: never touch an SSL object another thread reads
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass

    def server_close(self) -> None:
        self._closing.set()
        super().server_close()
        self._cut(float("inf"))  # workers blocked on slow callers end now, not at their deadline
        self._pool.shutdown(wait=False, cancel_futures=True)  # never wait here: it runs on the loop


def _busy(request: socket.socket, *, plaintext: bool) -> None:
    """Refuse at once when every worker is busy (plaintext only: TLS would need a handshake)."""
    if not plaintext:
        return
    body = json.dumps({"error": "busy, retry later"}).encode()
    try:
        request.settimeout(0.5)
        request.sendall(
            b"HTTP/1.0 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
            + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
            + body
        )
    except OSError:
        pass


class AgentHttpServer:
    def __init__(
        self,
        services: BrokerServices,
        loop: asyncio.AbstractEventLoop,
        listen: str,
        *,
        tls: ServerTls | None = None,
        max_connections: int = 64,
        max_per_client: int | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        host, _, port = listen.rpartition(":")
        self.services = services
        self.loop = loop
        self.host = (host or "127.0.0.1").strip("[]")
        self.timeout_s = timeout_s
        try:
            # The family of the address given: an IPv6 one ([::1]:0) could not be bound at all.
            family, *_, sockaddr = socket.getaddrinfo(
                self.host, int(port or 0), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
            self.server = _BoundedServer(
                (str(sockaddr[0]), int(port or 0)),
                self,
                family=family,
                tls=tls,
                max_connections=max_connections,
                max_per_client=max_per_client or max(2, max_connections // 8),
                read_timeout_s=timeout_s,
                deadline_s=2 * timeout_s,
            )
        except OSError as exc:
            raise listen_error(f"{host or '127.0.0.1'}:{port or 0}", "agent_http_listen", exc) from exc
        self.scheme = "https" if tls is not None else "http"
        self.thread = threading.Thread(target=self.server.serve_forever, name="agent-http", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.server.server_address[1]}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _log_chunk(self, http: BaseHTTPRequestHandler, data: bytes, token: str) -> None:
        try:
            attempt_id, offset, chunk = parse_log_chunk(data)
        except BadReportError as exc:
            return reply(http, 400, {"error": f"bad log chunk: {exc}"})

        async def append() -> int:
            return await asyncio.to_thread(self.services.agent_log, attempt_id, token, offset, chunk)

        try:
            next_offset = asyncio.run_coroutine_threadsafe(append(), self.loop).result(timeout=self.timeout_s)
        except AgentAuthError:
            return reply(http, 401, UNAUTHENTICATED)
        except AgentReportError as exc:  # authenticated, but a bad value: nothing was kept
            return reply(http, 400, {"error": f"bad log chunk: {exc}"})
        except TimeoutError:
            return reply(http, 503, {"error": "busy, retry later"})
        except StoreUnavailable:  # the database is away (restarting, say): the bootstrap retries
            return reply(http, 503, {"error": "store unavailable, retry later"})
        except Exception as exc:
            log.exception("agent log chunk failed")
            return reply(http, 500, {"error": type(exc).__name__})
        reply(http, 200, {"next_offset": next_offset})

    def handle(self, http: BaseHTTPRequestHandler) -> None:
        if http.path not in (REPORT_PATH, LOG_PATH):
            return reply(http, 404, {"error": "not found"})
        raw_length = http.headers.get("content-length")
        if raw_length is None:
            return reply(http, 411, {"error": "content-length is required"})
        if not (raw_length.strip().isascii() and raw_length.strip().isdigit()):  # not "²"
            return reply(http, 400, {"error": "content-length must be a number of bytes"})
        digits = raw_length.strip().lstrip("0") or "0"
        # (Python refuses to read more than 4,300 digits: a longer length got no answer, and a traceback.)
        length = int(digits) if len(digits) <= 18 else MAX_BODY + 1
        if length > MAX_BODY:
            return reply(http, 413, {"error": f"body larger than {MAX_BODY} bytes"})
        data = http.rfile.read(length)
        if len(data) < length:
            return  # the caller went away (or was cut at its deadline): nobody to answer
        token = http.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not token:  # no credentials: nothing of the body is looked at (nor said back) first
            return reply(http, 401, UNAUTHENTICATED)
        if http.path == LOG_PATH:
            return self._log_chunk(http, data, token)
        try:
            attempt_id, kind, exit_code, log_tail = parse_report(data)
            rank = parse_rank(data)
        except BadReportError as exc:
            return reply(http, 400, {"error": f"bad report: {exc}"})

        async def report() -> bool:
            return self.services.agent_report(attempt_id, token, kind, exit_code, log_tail, rank)

        try:
            stop = asyncio.run_coroutine_threadsafe(report(), self.loop).result(timeout=self.timeout_s)
        except AgentAuthError:
            return reply(http, 401, UNAUTHENTICATED)
        except AgentReportError as exc:  # authenticated, but a bad value: nothing was changed
            return reply(http, 400, {"error": f"bad report: {exc}"})
        except ValueError as exc:  # the service's own checks of the values
            return reply(http, 400, {"error": f"bad report: {exc}"})
        except TimeoutError:
            return reply(http, 503, {"error": "busy, retry later"})
        except StoreUnavailable:  # the database is away (restarting, say): the bootstrap retries
            return reply(http, 503, {"error": "store unavailable, retry later"})
        except Exception as exc:
            log.exception("agent report failed")
            return reply(http, 500, {"error": type(exc).__name__})
        reply(http, 200, {"stop": stop})


def parse_log_chunk(data: bytes) -> tuple[str, int, bytes]:
    """(attempt id, offset, bytes) of a log chunk body; BadReportError naming the field."""
    try:
        body = json.loads(data)
    except (ValueError, RecursionError) as exc:  # (60,000 `[`: too deep)
        raise BadReportError("body is not JSON") from exc
    if not isinstance(body, dict):
        raise BadReportError("body must be a JSON object")
    attempt_id, offset, chunk = body.get("attempt_id"), body.get("offset"), body.get("data")
    if not isinstance(attempt_id, str) or not attempt_id:
        raise BadReportError("attempt_id: must be a non-empty string")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise BadReportError("offset: must be an integer >= 0")
    if not isinstance(chunk, str):
        raise BadReportError("data: must be base64 text")
    try:
        return attempt_id, offset, base64.b64decode(chunk, validate=True)
    except ValueError as exc:
        raise BadReportError("data: must be base64 text") from exc


def parse_report(data: bytes) -> tuple[str, str, int | None, str]:
    """(attempt_id, kind, exit_code, log_tail) from a report body; BadReportError names the field."""
    try:
        body = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise BadReportError(f"body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadReportError("body must be a JSON object")
    attempt_id = body.get("attempt_id")
    if not isinstance(attempt_id, str) or not 0 < len(attempt_id) <= 128:
        raise BadReportError("attempt_id: must be a string of 1 to 128 characters")
    kind = body.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:  # (a list or object is not hashable)
        raise BadReportError(f"kind: must be one of {', '.join(sorted(KINDS))}")
    exit_code = body.get("exit_code")
    if exit_code is not None and (
        isinstance(exit_code, bool) or not isinstance(exit_code, int) or not INT32[0] <= exit_code <= INT32[1]
    ):
        raise BadReportError("exit_code: must be a 32-bit integer or null")
    log_tail = body.get("log_tail") or ""
    if not isinstance(log_tail, str):
        raise BadReportError("log_tail: must be a string")
    return attempt_id, str(kind), exit_code, log_tail


def parse_rank(data: bytes) -> int | None:
    """A gang node's `rank` in a report body (None for a one-node job); BadReportError if bad."""
    rank = json.loads(data).get("rank")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < 4096):
        raise BadReportError("rank: must be an integer from 0 to 4095 or null")
    return rank


def reply(http: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    try:
        http.send_response(status)
        http.send_header("content-type", "application/json")
        http.send_header("content-length", str(len(data)))
        http.send_header("connection", "close")
        # The bootstrap takes a 4xx as final only with this mark: a proxy's 404 is not our word.
        http.send_header("x-szb-agent", "1")
        http.end_headers()
        http.wfile.write(data)
    except OSError:
        pass  # the caller is gone
