"""A database host that accepts connections and never answers is named in the error.

Found by a held-out review of issue 13: `szb serve` on such a host stopped after 11-13 s with
"broker stopped: connection timeout expired", naming no host or port (a refused connection's
error names them). A real listening socket that never speaks; the real `szb serve`.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

from tests.brokerproc import ROOT
from tests.e2e.conftest import write_broker_config


def test_szb_serve_names_a_database_host_that_never_answers(tmp_path: Path) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(silent.accept()[0])  # accepted, never answered
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    config = write_broker_config(tmp_path)
    dsn = f"host=127.0.0.1 port={port} dbname=szb user=szb connect_timeout=2"
    config.write_text(config.read_text() + f"store: {{dsn: '{dsn}'}}\n")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "broker.cli", "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )
    finally:
        stop.set()
        for conn in held:
            conn.close()
        silent.close()
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"127.0.0.1 port {port}, database szb" in done.stderr, done.stderr
