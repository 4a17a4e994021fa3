"""The HTTP(S) server of `/metrics`: prometheus-client's WSGI app for one broker's registry.

prometheus-client's own `start_http_server(certfile=...)` wraps the listening socket, so the TLS
handshake runs inside `accept()` on its one serving thread: a peer that connects and never
says a word froze every scrape. Here each connection gets a thread of its own, which does the
handshake (with the broker's `ServerTls`, so a renewed certificate is served) under a timeout;
past `MAX_CONNECTIONS` open at once a new one is closed at once, so idle peers cannot pile up threads.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from socketserver import ThreadingMixIn
from threading import BoundedSemaphore, Thread
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, disable_created_metrics, make_wsgi_app

from broker.listen import listen_error
from broker.rpc_guard import RateLimitedWarning
from broker.tls import ServerTls, warn_if_plaintext

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0
"""How long each read of a connection (the TLS handshake's included) waits before it is closed."""
MAX_CONNECTIONS = 32
"""Connections served at once (a thread each); Prometheus needs one per scrape."""


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics http: " + format, *args)


class _MetricsHttp(ThreadingMixIn, WSGIServer):
    """A thread per connection; TLS, when on, is set up in that thread, never in the accept loop."""

    daemon_threads = True  # (never joined at close: a scrape in progress does not hold the broker)

    def __init__(
        self, address: tuple[str, int], family: int, tls: ServerTls | None, timeout_s: float,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.address_family = family  # (read by the base class when it makes the socket)
        self.tls = tls
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self._slots = BoundedSemaphore(max_connections)
        self._full = RateLimitedWarning(log)
        super().__init__(address, _QuietHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread for the connection, or (all `max_connections` taken) the connection closed."""
        if not self._slots.acquire(blocking=False):
            self._full.warn(
                "metrics: %d connections are open already (the most served at once); one from %s"
                " was closed", self.max_connections, client_address,
            )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # (no thread started: nothing else gives the slot back)
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        conn: socket.socket = request
        try:
            if self.tls is None:
                request.settimeout(self.timeout_s)  # an idle plaintext peer does not keep a thread either
            else:
                conn = self.tls.handshake(request, self.timeout_s)
            self.finish_request(conn, client_address)
        except OSError as exc:  # handshake refused or timed out, peer gone (ssl.SSLError included)
            log.debug("metrics connection from %s ended: %s", client_address, exc)
        except Exception:
            self.handle_error(conn, client_address)
        finally:
            self.shutdown_request(conn)
            self._slots.release()


class MetricsServer:
    """`/metrics` of one registry on HOST:PORT (port 0 picks one), over HTTPS with `tls`."""

    def __init__(
        self,
        registry: CollectorRegistry,
        listen: str,
        *,
        tls: ServerTls | None = None,
        operator: Callable[[str], bool] | None = None,
        timeout_s: float = TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        """Serve `registry`; `operator`: whether an `Authorization` header is an operator's
        (None: anyone may read); at most `max_connections` at once."""
        host, _, port = listen.rpartition(":")
        disable_created_metrics()  # type: ignore[no-untyped-call]  # `*_created` series: noise
        self.host = (host or "127.0.0.1").strip("[]")  # ([::1]: an IPv6 address, bracketed as in URLs)
        try:
            family, *_, sockaddr = socket.getaddrinfo(
                self.host, int(port or 0), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
            address = (str(sockaddr[0]), int(port or 0))
            self._server = _MetricsHttp(address, family, tls, timeout_s, max_connections)
        except OSError as exc:
            raise listen_error(f"{self.host}:{port or 0}", "metrics_listen", exc) from exc
        app = make_wsgi_app(registry)
        # Every tenant's budget, spend and queue are here: operators only, as `szb status` has it.
        self._server.set_app(_metrics_path_only(app if operator is None else _operators_only(app, operator)))
        self._thread = Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()
        self.port: int = self._server.server_port
        self.scheme = "https" if tls is not None else "http"
        log.info("metrics on %s", self.url)
        if tls is None:  # Prometheus sends an operator's token here
            warn_if_plaintext(self.host, "the metrics endpoint")

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/metrics"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _operators_only(app: Any, operator: Callable[[str], bool]) -> Any:
    """The WSGI `app`, answering 401 unless the request's `Authorization` is an operator's."""

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if operator(str(environ.get("HTTP_AUTHORIZATION", ""))):
            return app(environ, start_response)
        start_response("401 Unauthorized", [("Content-Type", "text/plain; charset=utf-8"),
                                            ("WWW-Authenticate", 'Bearer realm="szb metrics"')])
        return [b"/metrics needs an operator's bearer token (Authorization: Bearer TOKEN)\n"]

    return guarded


def _metrics_path_only(app: Any) -> Any:
    """The WSGI `app` on `/metrics` alone; any other path is 404 (prometheus-client answers every
    path with the metrics, so a typo in a scrape config went unnoticed)."""

    def routed(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") == "/metrics":
            return app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: the metrics are on /metrics\n"]

    return routed
