"""Fixtures for the crash-safety tests: the cloud doubles and a restartable broker."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.clouds.conftest import ecs_server, moto, moto_server  # noqa: F401 (fixtures)
from tests.crash.world import Broker, write_setup
from tests.doubles.ecs_endpoint import EcsCloud, EcsEndpoint
from tests.doubles.moto_front import MotoFront
from tests.ports import lasting_port
from tests.store.conftest import pg_dsn, pg_server  # noqa: F401 (fixtures)


@pytest.fixture
def ecs(ecs_server: EcsEndpoint) -> Iterator[EcsCloud]:  # noqa: F811
    cloud = EcsCloud(instance_types=("ecs.gn7i-c8g1.2xlarge",), zones=("cn-beijing-i",))
    ecs_server.handler = cloud
    yield cloud
    ecs_server.handler = EcsCloud()


MakeBroker = Callable[..., Broker]


@pytest.fixture
def make_broker(
    tmp_path: Path, moto: MotoFront, ecs_server: EcsEndpoint, ecs: EcsCloud  # noqa: F811
) -> Iterator[MakeBroker]:
    """`make_broker(**write_setup options)` → an unstarted broker; all are stopped at the end."""
    made: list[Broker] = []

    def make(**options: Any) -> Broker:
        folder = tmp_path / f"broker-{len(made)}"
        options = {"agent_port": lasting_port(), **options}  # a test may name its own
        config = write_setup(folder, moto.url, ecs_server.address, **options)
        broker = Broker(config, options.get("store_dsn"))
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.stop()


@pytest.fixture
def hangs_up() -> Iterator[int]:
    """A port that accepts each connection, reads the request and closes without answering."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    conn.recv(65536)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join(timeout=2)
    server.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """The broker's data dir (tmp_path/data) on a 16 MiB tmpfs of its own, to fill or make read-only."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    data = tmp_path / "data"
    data.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(data)]
    if (mounted := subprocess.run(mount, capture_output=True)).returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield data
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)
