"""Run the real broker (`szb serve`) as a child process for end-to-end tests."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc

from broker.api import broker_service_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
JOB_USER = "szb-job"
"""The local executor's default `run_as` user; a broker running as root creates it."""
JOB_PYTHON = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or sys.executable
"""A python3 the sandboxed job user can run (the test venv may sit in root's home)."""


class BrokerProcess:
    """`szb serve --config FILE` on a free port; `kill()` is a real SIGKILL."""

    def __init__(
        self, config: Path, *, extra_env: dict[str, str] | None = None, host: str = "127.0.0.1"
    ) -> None:
        self.config = config
        self.host = host
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.output: list[str] = []

    def start(self, port: int = 0, timeout: float = 30.0) -> int:
        env = {**os.environ, "GRPC_VERBOSITY": "ERROR", **self.extra_env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "broker.cli", "serve", "--config", str(self.config),
             "--listen", f"{self.host}:{port}"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )
        ready = threading.Event()

        log = open(self.config.parent / "broker.log", "a")  # noqa: SIM115 (closed when the pipe ends)

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                log.write(line)
                log.flush()
                m = re.search(r"serving on port (\d+)", line)
                if m:
                    self.port = int(m.group(1))
                    ready.set()
            log.close()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("broker did not start:\n" + "".join(self.output))
        return self.port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """SIGKILL the broker alone; jobs it started keep running, as after a real crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> int:
        """Start again on the same port (clients keep their address)."""
        return self.start(port=self.port)


def szb(
    broker: BrokerProcess, token: str, *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The `szb` CLI as a user types it, against `broker` with a tenant's `token` (`env`: more)."""
    full = {**os.environ, "SZB_SERVER": broker.address, "SZB_TOKEN": token, "GRPC_VERBOSITY": "ERROR"}
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "broker.cli", *args],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextmanager
def stub_for(address: str) -> Iterator[broker_service_pb2_grpc.BrokerServiceStub]:
    with grpc.insecure_channel(address) as channel:
        yield broker_service_pb2_grpc.BrokerServiceStub(channel)
