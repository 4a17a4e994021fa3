"""A TCP relay in front of a real server that can hold every byte, both ways, until released.

It makes a real backend (slurmrestd here) as slow as a test needs without touching the
broker's code: while held, requests reach the server only after `release()`.
"""

from __future__ import annotations

import socket
import threading
import urllib.parse


class Gate:
    def __init__(self, url: str) -> None:
        parsed = urllib.parse.urlsplit(url)
        self._target = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self._open = threading.Event()
        self._open.set()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = parsed._replace(netloc=f"127.0.0.1:{self._server.getsockname()[1]}").geturl()
        self._socks: list[socket.socket] = []
        self._only: bytes | None = None
        self.held: list[bytes] = []
        """What waited at the gate while it was held (a test can tell which request waits)."""
        threading.Thread(target=self._accept, daemon=True, name="gate").start()

    def hold(self, only: bytes | None = None) -> None:
        """Hold every byte, or with `only` just the data that contains it (b"POST ", say)."""
        self._only = only
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def close(self) -> None:
        self.release()
        self._server.close()
        for s in self._socks:
            s.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
                upstream = socket.create_connection(self._target)
            except OSError:
                return
            self._socks += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if not self._open.is_set() and (self._only is None or self._only in data):
                    self.held.append(data)
                    self._open.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
