"""A TCP proxy in front of the agent endpoint, to cut the instances' path to a running broker.

`cut()` closes the listener and every connection through it: the instances' reports and
heartbeats are refused, as behind a broken firewall or load balancer, while the broker is up.
"""

from __future__ import annotations

import socket
import threading

from tests.ports import lasting_port


class AgentProxy:
    """127.0.0.1:`port` → 127.0.0.1:`target` until `cut()`."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = lasting_port()
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port), backlog=64)
        threading.Thread(target=self._accept, name="agent-proxy", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed: the path is cut
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def cut(self) -> None:
        """Refuse new connections and break those open."""
        self._listener.close()
        with self._lock:
            for conn in self._open:
                _close(conn)
            self._open.clear()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        _close(src)
        _close(dst)


def _close(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    conn.close()
