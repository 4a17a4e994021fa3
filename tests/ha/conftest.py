"""A split broker on the real PostgreSQL: API replicas and scheduler candidates, each a real
`szb serve --role ...` process, all sharing one fresh database per test."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.brokerproc import BrokerProcess
from tests.clouds.conftest import ecs_server
from tests.e2e.conftest import write_broker_config
from tests.store.conftest import pg_dsn, pg_server

__all__ = ["ecs_server", "pg_dsn", "pg_server"]

LEASE_S = 2.0
RENEW_S = 0.25
ACTIVE = re.compile(r"scheduler active \(epoch (\d+)\)")


class Node(BrokerProcess):
    """One process of the split broker; `role` is given through SZB_ROLE."""

    def __init__(self, config: Path, role: str, env: dict[str, str] | None = None) -> None:
        super().__init__(config, extra_env={"SZB_ROLE": role, **(env or {})})
        self.role = role

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def epochs(self) -> list[int]:
        """Epochs of the terms this process was elected for, in order."""
        return [int(m.group(1)) for line in list(self.output) if (m := ACTIVE.search(line))]

    def leading(self) -> bool:
        """Elected, and not stepped down since (from what the process printed)."""
        lines = [ln for ln in list(self.output) if "scheduler active" in ln or "scheduler standby" in ln]
        return bool(lines) and "scheduler active" in lines[-1]

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def text(self) -> str:
        return "".join(self.output)


class Cluster:
    """The processes of one test; everything started is stopped at the end."""

    def __init__(self, folder: Path, dsn: str, extra: str = "") -> None:
        self.config = write_broker_config(folder)
        self.config.write_text(
            self.config.read_text()
            + f"store: {{dsn: '{dsn}'}}\nha: {{lease_s: {LEASE_S}, renew_s: {RENEW_S}}}\n"
            + extra
        )
        self.dsn = dsn
        self.nodes: list[Node] = []

    def start(self, role: str, env: dict[str, str] | None = None) -> Node:
        node = Node(self.config, role, env)
        self.nodes.append(node)
        node.start()
        return node

    def leader(self, timeout: float = 120.0, among: list[Node] | None = None) -> Node:
        """The one scheduler that says it leads (waits for an election). Tests of how fast a
        takeover is pass their bound; the default only bounds a node start on a loaded box."""
        deadline = time.monotonic() + timeout
        while True:
            alive = [n for n in (among or self.nodes) if n.role == "scheduler" and n.running()]
            leading = [n for n in alive if n.leading()]
            if len(leading) == 1:
                return leading[0]
            assert len(leading) <= 1, "two schedulers say they lead"
            logs = "\n".join(n.text() for n in alive)
            assert time.monotonic() < deadline, f"no scheduler was elected:\n{logs}"
            time.sleep(0.05)

    def stop(self) -> None:
        for node in self.nodes:
            if node.running():
                node.resume()
            node.stop()


@pytest.fixture
def cluster(tmp_path: Path, pg_dsn: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "broker", pg_dsn)
    try:
        yield c
    finally:
        c.stop()
