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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import grpc

from broker.api import broker_service_pb2_grpc
from broker.auth import Role, hash_token, token_entry_line
from tests.ports import lasting_port

ROOT = Path(__file__).resolve().parents[1]
JOB_USER = "szb-job"
"""The local executor's default `run_as` user; a broker running as root creates it."""
JOB_PYTHON = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or sys.executable
"""A python3 the sandboxed job user can run (the test venv may sit in root's home)."""
OPERATOR_TOKEN = "token-operator-tests-0123456789"
OPERATOR_LINE = token_entry_line("ops", OPERATOR_TOKEN, Role.OPERATOR, "ops")
"""A tokens-file entry of an operator, who reads a job's events as stored: what a tenant's view
of its own job leaves out of another tenant's (who reclaimed it, for which job)."""
OPERATOR = (("authorization", f"Bearer {OPERATOR_TOKEN}"),)


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

    def broker_id(self) -> str:
        """The id the broker tags what it starts with, as its start log says."""
        found = re.search(r"tagged szb:broker=(\S+)", "".join(self.output))
        assert found is not None, "the broker's log does not say its broker id"
        return found.group(1)

    def start(self, port: int = 0, timeout: float = 120.0) -> int:
        # The deadline only bounds a broker that never comes up: a start on a loaded 2-core CI
        # box can take more than 30 s (several tests already asked for 120).
        # A port of our choosing, not the kernel's ephemeral pick: `restart()` binds it again after
        # a kill, and meanwhile any outgoing connection on the machine could take an ephemeral one.
        if port:
            return self._start(port, timeout)
        for _ in range(2):  # another run on the machine may bind the port we picked first
            try:
                return self._start(lasting_port(), timeout)
            except RuntimeError as exc:
                if "the address is in use" not in str(exc):
                    raise
                self.output = []
        return self._start(lasting_port(), timeout)

    def _start(self, port: int, timeout: float) -> int:
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

    def said(self, text: str, timeout: float = 15.0) -> bool:
        """Whether a line of the broker's output contains `text` within `timeout` s (its log lines
        are read by a thread, so one written just before an RPC answered may not be in yet)."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.output):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

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


def copy_hardware_files(folder: Path) -> None:
    """The shipped accelerators.yaml and regimes.yaml into `folder`, where a test's policy names them."""
    for name in ("accelerators.yaml", "regimes.yaml"):
        shutil.copy(ROOT / "configs" / name, folder / name)


def write_broker_folder(
    folder: Path, policy: str, tokens: Mapping[str, str], *, broker_extra: str = "", operator: bool = False
) -> Path:
    """A broker.yaml, the policy, a tokens file (tenant: token) and the bundled catalogs in `folder`.

    The broker keeps its data in `folder/data` and polls every 0.2 s; `broker_extra` is more
    broker.yaml; `operator` adds OPERATOR_LINE. Returns the broker.yaml path.
    """
    folder.mkdir(parents=True, exist_ok=True)
    copy_hardware_files(folder)
    (folder / "policy.yaml").write_text(policy)
    (folder / "tokens.yaml").write_text(
        "tokens:\n" + "".join(f"  - {{tenant: {t}, sha256: {hash_token(v)}}}\n" for t, v in tokens.items())
        + (OPERATOR_LINE + "\n" if operator else "")
    )
    (folder / "broker.yaml").write_text(
        "data_dir: data\npolicy: policy.yaml\ntokens_file: tokens.yaml\ndispatch: {poll_interval_s: 0.2}\n"
        + broker_extra
    )
    return folder / "broker.yaml"


@contextmanager
def running_broker(config: Path) -> Iterator[BrokerProcess]:
    """`szb serve --config config`, stopped when the block ends."""
    proc = BrokerProcess(config)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


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
